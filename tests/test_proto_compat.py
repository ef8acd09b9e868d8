"""The event contracts stay wire-compatible with the committed snapshot."""

from __future__ import annotations

import copy
import json
from pathlib import Path

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
