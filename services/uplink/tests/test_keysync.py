"""Key sync's checks and writes (pure logic on real files; the whole path through a real
ingest, codec and Orthanc is services/ctl/tests/test_keys.py).

A listing is refused whole, writing nothing, if any key is private, not X25519, listed
under another id than its own, or the current id is not listed. Writes put the keys
first, then the marker, and drop only retired keys the sync itself named."""

from __future__ import annotations

from pathlib import Path

import pytest
from trailerlink_events.wire import KeyEntry, KeyListing
from trailerlink_sealed import OpeningKey
from trailerlink_uplink.keysync import BadKeyListing, parse_listing, write_keys


def _listing(*keys: OpeningKey, current: OpeningKey | None = None) -> dict:
    return KeyListing(
        (current or keys[0]).key_id,
        [KeyEntry(k.key_id, k.recipient.to_pem().decode()) for k in keys],
    ).to_json()


def test_listing_is_parsed_and_written_keys_then_marker(tmp_path: Path) -> None:
    old, new = OpeningKey.generate(), OpeningKey.generate()
    directory = tmp_path / "keys"
    directory.mkdir()
    (directory / "bootstrap.pem").write_bytes(old.recipient.to_pem())  # not the sync's
    current, pems = parse_listing(_listing(old, new, current=new))
    assert current == new.key_id
    assert write_keys(directory, current, pems)
    assert (directory / "current").read_text().strip() == new.key_id
    assert (directory / f"{new.key_id}.pem").read_bytes() == new.recipient.to_pem()
    assert not write_keys(directory, current, pems)  # unchanged: nothing rewritten

    # The old key retired at the data centre: its synced file goes, others stay.
    current, pems = parse_listing(_listing(new))
    assert write_keys(directory, current, pems)
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["bootstrap.pem", f"{new.key_id}.pem", "current"]
    )


@pytest.mark.parametrize(
    "defect", ["private key", "wrong id", "current not listed", "not a listing", "garbage pem"]
)
def test_bad_listing_is_refused_whole(tmp_path: Path, defect: str) -> None:
    good, other = OpeningKey.generate(), OpeningKey.generate()
    body: object = _listing(good, other)
    assert isinstance(body, dict)
    if defect == "private key":
        body["keys"][1]["public_key_pem"] = other.to_pem().decode()
    elif defect == "wrong id":
        body["keys"][1]["key_id"] = "dc-0000000000000000"
    elif defect == "current not listed":
        body["current_key_id"] = "dc-1111111111111111"
    elif defect == "not a listing":
        body = ["dc-0000000000000000"]
    else:
        body["keys"][0]["public_key_pem"] = "-----BEGIN PUBLIC KEY-----\nAAAA\n"
    with pytest.raises(BadKeyListing):
        parse_listing(body)
