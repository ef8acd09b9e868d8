"""Let pynetdicom reuse the bytes of a response identifier encoded before.

A modality repeats the same worklist query every minute or so; encoding the same 120
answers with pydicom each time was most of a C-FIND's CPU time. A service marks a
dataset it will answer again with :func:`keep_encodings`; while reuse is enabled (by
:func:`enable_reuse`, until the last owner calls :func:`disable_reuse`), pynetdicom's
``encode`` as imported into ``pynetdicom.service_class`` (where the C-FIND, C-GET and
C-MOVE service classes call it for each identifier) returns the kept bytes for such a
dataset and encodes every other dataset as before. The module attribute is restored
when reuse is disabled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pynetdicom.service_class as _service_class
from pydicom.dataset import Dataset

_KEPT = "_trailerlink_encoded"
_lock = threading.Lock()
_owners: set[int] = set()
_original: Callable[..., bytes | None] | None = None
REUSED = [0]  # encodings served from a dataset's kept bytes (tests read it)


def keep_encodings(ds: Dataset) -> None:
    """Mark ``ds``: its encodings (per transfer syntax) are kept once made."""
    object.__setattr__(ds, _KEPT, {})


def enable_reuse(owner: object) -> None:
    global _original
    with _lock:
        if _original is None:
            _original = _service_class.encode
            _service_class.encode = _encode
        _owners.add(id(owner))


def disable_reuse(owner: object) -> None:
    global _original
    with _lock:
        _owners.discard(id(owner))
        if not _owners and _original is not None:
            _service_class.encode = _original
            _original = None


def _encode(
    ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    original = _original
    assert original is not None
    kept = getattr(ds, _KEPT, None) if type(ds) is Dataset else None
    if kept is None:
        return original(ds, is_implicit_vr, is_little_endian, deflated)
    key = (is_implicit_vr, is_little_endian, deflated)
    data = kept.get(key)
    if data is not None:
        REUSED[0] += 1
        return data
    data = original(ds, is_implicit_vr, is_little_endian, deflated)
    if data is not None:
        kept[key] = data
    return data
