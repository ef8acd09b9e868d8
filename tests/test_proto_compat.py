"""The event contracts and the uplink-ingest HTTP names stay compatible with the committed
snapshots."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from trailerlink_events import wire
from trailerlink_events._generated import events_pb2
from trailerlink_events.compat import additions, breaking_changes, shape

SNAPSHOT = Path(__file__).resolve().parent.parent / "proto" / "snapshots" / "events.v1.json"


def baseline() -> dict:
    return json.loads(SNAPSHOT.read_text())


def test_contracts_are_compatible_with_the_snapshot() -> None:
    assert breaking_changes(baseline(), shape(events_pb2.DESCRIPTOR)) == []


def test_snapshot_records_every_field() -> None:
    # A field added without `make proto-snapshot` would escape the guard next time.
    assert additions(baseline(), shape(events_pb2.DESCRIPTOR)) == []


def test_guard_catches_a_retyped_field() -> None:
    new = copy.deepcopy(baseline())
    new["messages"]["trailerlink.events.v1.ObjectReceived"]["fields"]["4"]["type"] = 9
    assert any("field 4 type changed" in p for p in breaking_changes(baseline(), new))


def test_guard_catches_a_reused_number() -> None:
    new = copy.deepcopy(baseline())
    fields = new["messages"]["trailerlink.events.v1.ObjectSealed"]["fields"]
    fields["7"]["name"] = "something_else"
    assert any("field 7 name changed" in p for p in breaking_changes(baseline(), new))


def test_guard_catches_removal_without_reserving() -> None:
    new = copy.deepcopy(baseline())
    del new["messages"]["trailerlink.events.v1.Heartbeat"]["fields"]["3"]
    assert any("removed without reserving" in p for p in breaking_changes(baseline(), new))
    new["messages"]["trailerlink.events.v1.Heartbeat"]["reserved_numbers"] = [3]
    assert breaking_changes(baseline(), new) == []


def test_guard_catches_renamed_enum_value() -> None:
    new = copy.deepcopy(baseline())
    new["enums"]["trailerlink.events.v1.LinkState"]["1"] = "LINK_STATE_ONLINE"
    assert breaking_changes(baseline(), new)


def test_only_demographics_correction_names_patient_fields() -> None:
    # DESIGN promise 3: patient identifiers travel in one event only, by design.
    patientish = ("patient", "name", "birth", "nhs")
    for message, spec in baseline()["messages"].items():
        if message.endswith("DemographicsCorrection"):
            continue
        for field in spec["fields"].values():
            assert not any(word in field["name"] for word in patientish), (message, field)


# The uplink-ingest HTTP contract (trailerlink_events.wire): its names are pinned the same way.
WIRE_SNAPSHOT = SNAPSHOT.parent / "wire.v1.json"


def wire_baseline() -> dict:
    return json.loads(WIRE_SNAPSHOT.read_text())


def test_wire_names_are_compatible_with_the_snapshot() -> None:
    assert wire.breaking_changes(wire_baseline(), wire.shape()) == []


def test_wire_snapshot_records_every_name() -> None:
    assert wire.additions(wire_baseline(), wire.shape()) == []


def test_wire_guard_catches_a_renamed_receipt_field() -> None:
    new = copy.deepcopy(wire_baseline())
    new["receipt"][new["receipt"].index("outcome")] = "result"
    assert "receipt: outcome removed or renamed" in wire.breaking_changes(wire_baseline(), new)


def test_wire_guard_refuses_any_new_upload_metadata_key() -> None:
    # An older ingest refuses a key it does not know: a new fact travels as a header.
    new = copy.deepcopy(wire_baseline())
    new["upload_metadata.keys"].append("modality")
    assert any(
        "upload_metadata.keys changed" in p for p in wire.breaking_changes(wire_baseline(), new)
    )


def test_wire_allows_a_new_receipt_field() -> None:
    new = copy.deepcopy(wire_baseline())
    new["receipt"].append("pacs_stored_at")
    assert wire.breaking_changes(wire_baseline(), new) == []
