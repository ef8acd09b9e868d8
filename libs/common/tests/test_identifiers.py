"""The one check of UIDs, SHA-256 digests and sealing key ids every hop uses."""

from __future__ import annotations

import pytest
from trailerlink_common.identifiers import is_key_id, is_sha256_hex, is_uid


@pytest.mark.parametrize("value", ["1", "1.2.840.10008.5.1.4.1.1.1.2", "1." + "2" * 62])
def test_uids_accepted(value: str) -> None:
    assert is_uid(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".",
        "1.",
        ".1",
        "1..2",
        "1.2a",
        "1.2\n",
        "1.2 ",
        "1." + "2" * 63,
        "١.٢",
        None,
        12,
    ],
)
def test_non_uids_refused(value: object) -> None:
    assert not is_uid(value)


def test_sha256_hex() -> None:
    digest = "0123456789abcdef" * 4
    assert is_sha256_hex(digest)
    for bad in (digest.upper(), digest[:-1], digest + "0", digest + "\n", None):
        assert not is_sha256_hex(bad)


def test_key_ids() -> None:
    assert is_key_id("dc-0123456789abcdef")
    for bad in (
        "dc-0123456789ABCDEF",
        "dc-0123456789abcde",
        "dc-0123456789abcdef\n",
        "xx-0123456789abcdef",
        "",
        None,
    ):
        assert not is_key_id(bad)
