"""C-FIND answers: the requested attributes of a record, in a character set the
modality asked for (or can be told about), built once per query shape.

Modalities poll the worklist with the same query every minute or so, so an answer is
kept per (record, record version, query shape, character set) until that record
changes. Values are held as ``str``; pydicom encodes them in the answer's Specific
Character Set when pynetdicom sends them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from pydicom.charset import python_encoding
from pydicom.dataset import Dataset

from trailerlink_worklist.matching import Query, Record

UTF8 = "ISO_IR 192"
_ENCODED = "_trailerlink_encoded"
_TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})


def requested_charsets(identifier: Dataset) -> list[str]:
    value = identifier.get("SpecificCharacterSet", None)
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _texts(ds: Dataset) -> Iterable[str]:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield from _texts(item)
        elif elem.VR in _TEXT_VRS and elem.value not in (None, ""):
            yield str(elem.value)


def choose_charset(answer: Dataset, requested: list[str], default: str) -> str | None:
    """The Specific Character Set of an answer: None for plain ASCII with nothing
    requested; else the requested set if it can carry every value, else ``default``
    if it can, else UTF-8 (ISO_IR 192)."""
    texts = [t for t in _texts(answer) if not t.isascii()]
    if not texts:
        return requested[0] if len(requested) == 1 and requested[0] else None
    for candidate in ([requested[0]] if len(requested) == 1 else []) + [default, UTF8]:
        codec = python_encoding.get(candidate)
        if codec is None:
            continue
        try:
            for text in texts:
                text.encode(codec)
        except UnicodeEncodeError:
            continue
        return candidate
    return UTF8


class Answers:
    """Builds and keeps C-FIND answers."""

    def __init__(self, default_charset: str = "ISO_IR 100", max_entries: int = 4000) -> None:
        self.default_charset = default_charset
        self.max_entries = max_entries
        self._kept: OrderedDict[tuple[object, ...], Dataset] = OrderedDict()
        self._lock = threading.Lock()

    def answer(self, query: Query, record: Record, requested: list[str]) -> Dataset:
        """The identifier to send for ``record``. The same object may be returned to
        several associations: callers must not modify it."""
        key = (record.key, record.version, query.shape(), tuple(requested))
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
                return kept
        ds = query.response(record)
        charset = choose_charset(ds, requested, self.default_charset)
        if charset:
            ds.SpecificCharacterSet = charset
        if record.key and record.version and not _has_multi_item_sequences(record):
            object.__setattr__(ds, _ENCODED, {})
            with self._lock:
                self._kept[key] = ds
                while len(self._kept) > self.max_entries:
                    self._kept.popitem(last=False)
        return ds


def _has_multi_item_sequences(record: Record) -> bool:
    # An answer for a record whose sequences have several items depends on which items
    # matched, not only on the query's shape: such answers are not kept.
    return any(len(items) > 1 for items in record.items.values())


def install_encoding_cache() -> None:
    """Let pynetdicom reuse the bytes of an answer it has encoded before.

    A modality repeats the same query every minute or so; encoding the same 120
    answers with pydicom each time was most of the C-FIND's CPU time. Answers kept by
    :class:`Answers` carry a small dict of their encodings per transfer syntax; any
    other dataset is encoded as before. (pynetdicom 3 calls ``encode`` as imported
    into ``pynetdicom.service_class``; a test checks the hook is in use.)
    """
    import pynetdicom.service_class as service_class

    original: Callable[..., bytes | None] = service_class.encode
    if getattr(original, "_trailerlink", False):
        return

    def encode(ds: Dataset, is_implicit_vr: bool, is_little_endian: bool,
               deflated: bool = False) -> bytes | None:
        kept = getattr(ds, _ENCODED, None) if type(ds) is Dataset else None
        if kept is None:
            return original(ds, is_implicit_vr, is_little_endian, deflated)
        key = (is_implicit_vr, is_little_endian, deflated)
        data = kept.get(key)
        if data is not None:
            ENCODINGS_REUSED[0] += 1
            return data
        data = original(ds, is_implicit_vr, is_little_endian, deflated)
        if data is not None:
            kept[key] = data
        return data

    encode._trailerlink = True  # type: ignore[attr-defined]
    service_class.encode = encode  # type: ignore[assignment]


ENCODINGS_REUSED = [0]
"""How many answers were sent from kept bytes (for tests)."""
