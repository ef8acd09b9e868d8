"""OutgoingLayout: the sealed object's path mirrors its received copy's, both ways, and a
path outside the layout is refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from trailerlink_spool.layout import (
    SEALED_SUFFIX,
    SPOOL_SUFFIX,
    OutgoingLayout,
    OutsideLayoutError,
    SpoolLayout,
)

SPOOL_REL = "objects/20260101/1.2.826.0.1.3680043.10.1234.7.0123456789abcdef.tlspool"
SEALED_REL = "objects/20260101/1.2.826.0.1.3680043.10.1234.7.0123456789abcdef.tlsealed"


def test_suffixes() -> None:
    assert (SPOOL_SUFFIX, SEALED_SUFFIX) == (".tlspool", ".tlsealed")


def test_spool_path_to_sealed_path_and_back() -> None:
    assert OutgoingLayout.sealed_relative(SPOOL_REL) == SEALED_REL
    assert OutgoingLayout.spool_relative(SEALED_REL) == SPOOL_REL


def test_mapping_round_trips_a_path_the_spool_layout_makes(tmp_path: Path) -> None:
    spool = SpoolLayout(tmp_path / "spool")
    rel = spool.relative(
        spool.object_path("1.2.3.4", "0123456789abcdef", datetime(2026, 1, 1, 23, 59, tzinfo=UTC))
    )
    sealed = OutgoingLayout.sealed_relative(rel)
    assert sealed == "objects/20260101/1.2.3.4.0123456789abcdef.tlsealed"
    assert OutgoingLayout.spool_relative(sealed) == rel


def test_sealed_file_is_under_the_root(tmp_path: Path) -> None:
    layout = OutgoingLayout(tmp_path / "outgoing")
    assert layout.sealed_file(SEALED_REL) == tmp_path / "outgoing" / SEALED_REL


def test_a_spool_path_without_the_spool_suffix_still_gets_the_sealed_suffix() -> None:
    # As the codec always did: the suffix is replaced if present, appended otherwise.
    assert OutgoingLayout.sealed_relative("objects/x/1.2.3") == "objects/x/1.2.3.tlsealed"


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "../outside.tlspool", "objects/../../x", "objects/a\\b.tlspool"]
)
def test_spool_paths_outside_the_layout_are_refused(path: str) -> None:
    with pytest.raises(OutsideLayoutError):
        OutgoingLayout.sealed_relative(path)


@pytest.mark.parametrize("path", ["/etc/x.tlsealed", "../x.tlsealed", "objects/../../x.tlsealed"])
def test_sealed_paths_outside_the_layout_are_refused(path: str, tmp_path: Path) -> None:
    layout = OutgoingLayout(tmp_path)
    with pytest.raises(OutsideLayoutError):
        OutgoingLayout.spool_relative(path)
    with pytest.raises(OutsideLayoutError):
        layout.sealed_file(path)
    with pytest.raises(OutsideLayoutError):
        OutgoingLayout.checked_sealed_path(path)


def test_the_refusal_is_a_value_error() -> None:
    assert issubclass(OutsideLayoutError, ValueError)


def test_checked_sealed_path_is_normalised() -> None:
    assert OutgoingLayout.checked_sealed_path("objects//d/./x.tlsealed") == "objects/d/x.tlsealed"


def test_sealed_files_are_recognised_and_temporaries_are_not(tmp_path: Path) -> None:
    layout = OutgoingLayout(tmp_path / "outgoing")
    assert layout.iter_sealed_files() == []
    day = layout.root / "objects" / "20260101"
    day.mkdir(parents=True)
    sealed = [day / "1.2.3.4.r1.tlsealed", day / "1.2.3.5.r2.tlsealed"]
    for path in sealed:
        path.write_bytes(b"sealed")
    partial = day / ".1.2.3.6.r3.tlsealed.x1y2.partial"  # trailerlink_common.durable's temp
    partial.write_bytes(b"half")
    (day / "notes.txt").write_bytes(b"other")
    assert layout.iter_sealed_files() == sealed
    assert layout.is_sealed(sealed[0]) and layout.is_sealed(SEALED_REL)
    assert not layout.is_sealed(partial) and not layout.is_sealed(SPOOL_REL)
