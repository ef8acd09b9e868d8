"""C-FIND answers: the requested attributes of a record, in a character set the
modality reads, built once per query shape.

Modalities poll the worklist with the same query every minute or so, so an answer is
kept per (record, record version, query shape, requested and answer character set,
upper-case names) until that record changes. Values are held as ``str``; pydicom
encodes them in the answer's Specific Character Set when pynetdicom sends them.

Which character set (:func:`answer_charset`): the calling AE's configured set
(``TRAILERLINK_DICOM_AE_CHARACTER_SETS``), else the set the query names, else
``TRAILERLINK_DICOM_DEFAULT_CHARACTER_SET``. A value that set cannot hold is
transliterated by :func:`trailerlink_worklist.charsets.transliterate` (``ŵ``→``w``,
``ł``→``l``, Greek by ELOT 743) and the answer counted
(``trailerlink_worklist_answers_transliterated_total``): never ``?``, never bytes the
modality would read as other letters. Only a character with no transliteration (CJK,
say) makes the answer ISO_IR 192 instead. Names keep the case the source gave, unless
the calling AE is listed in ``TRAILERLINK_DICOM_UPPERCASE_NAMES_AES``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydicom.charset import python_encoding
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from trailerlink_dicomnet.encoding import keep_encodings

from trailerlink_worklist import charsets, metrics
from trailerlink_worklist.matching import Query, Record

UTF8 = "ISO_IR 192"
_TRANSLITERATED = "_trailerlink_transliterated"
_TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})


@dataclass(frozen=True)
class AnswerProfile:
    """What one calling AE reads: its character set (None: as its query says, else the
    default) and whether it wants names in upper case."""

    charset: str | None = None
    upper_names: bool = False


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


def answer_charset(requested: list[str], configured: str | None, default: str) -> str:
    """The character set to answer in (see the module doc)."""
    if configured:
        return configured
    if len(requested) == 1 and requested[0] in python_encoding:
        return requested[0]
    return default


def choose_charset(answer: Dataset, requested: list[str], default: str) -> str | None:
    """The Specific Character Set of ``answer`` as it stands: None for plain ASCII with
    nothing requested; else :func:`answer_charset` if it can carry every value, else
    ISO_IR 192 (callers transliterate first: see :func:`prepare`)."""
    texts = [t for t in _texts(answer) if not t.isascii()]
    chosen = answer_charset(requested, None, default)
    if not texts:
        return requested[0] if len(requested) == 1 and requested[0] else None
    codec = python_encoding.get(chosen)
    try:
        for text in texts:
            text.encode(codec or "")
    except (UnicodeEncodeError, LookupError):
        return UTF8
    return chosen


def prepare(answer: Dataset, requested: list[str], profile: AnswerProfile, default: str) -> bool:
    """Make ``answer`` readable by the calling AE: upper-case its names if asked, put
    every value in the answer's character set (transliterating what it cannot hold)
    and set Specific Character Set. Returns True when something was transliterated."""
    charset = answer_charset(requested, profile.charset, default)
    codec = python_encoding.get(charset, "utf-8")
    if profile.upper_names:
        _rewrite(answer, lambda vr, text: text.upper() if vr == "PN" else text)
    needs = [t for t in _texts(answer) if not t.isascii()]
    transliterated = False
    if needs and codec not in ("utf_8", "utf-8"):
        try:
            for text in needs:
                text.encode(codec)
        except UnicodeEncodeError:
            try:
                _rewrite(
                    answer, lambda _vr, text: charsets.transliterate(text, codec), dry_run=True
                )
            except ValueError:
                charset = UTF8  # no Latin spelling (CJK ...): UTF-8, declared
            else:
                _rewrite(answer, lambda _vr, text: charsets.transliterate(text, codec))
                transliterated = True
    if needs or (len(requested) == 1 and requested[0]):
        answer.SpecificCharacterSet = charset if needs else requested[0]
    return transliterated


def _rewrite(ds: Dataset, change: Callable[[str, str], str], dry_run: bool = False) -> None:
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value or []:
                _rewrite(item, change, dry_run)
        elif elem.VR in _TEXT_VRS and elem.value not in (None, ""):
            values = (
                elem.value
                if isinstance(elem.value, list) or type(elem.value).__name__ == "MultiValue"
                else [elem.value]
            )
            new = [change(elem.VR, str(v)) for v in values]
            if not dry_run:
                ds.add(DataElement(elem.tag, elem.VR, new if len(new) > 1 else new[0]))


class Answers:
    """Builds and keeps C-FIND answers."""

    def __init__(
        self,
        default_charset: str = "ISO_IR 100",
        max_entries: int = 4000,
        profiles: dict[str, AnswerProfile] | None = None,
    ) -> None:
        self.default_charset = default_charset
        self.profiles = profiles or {}
        self.max_entries = max_entries
        self._kept: OrderedDict[tuple[object, ...], Dataset] = OrderedDict()
        self._lock = threading.Lock()

    def profile(self, calling_ae: str) -> AnswerProfile:
        return self.profiles.get(calling_ae.strip(), AnswerProfile())

    def answer(
        self,
        query: Query,
        record: Record,
        requested: list[str],
        profile: AnswerProfile | None = None,
    ) -> Dataset:
        """The identifier to send for ``record`` to a modality that reads ``profile``.
        The same object may be returned to several associations: callers must not
        modify it."""
        profile = profile or AnswerProfile()
        key = (record.key, record.version, query.shape(), tuple(requested), profile)
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
        if kept is not None:
            if getattr(kept, _TRANSLITERATED, False):
                metrics.TRANSLITERATED.labels(str(kept.SpecificCharacterSet)).inc()
            return kept
        ds = query.response(record)
        transliterated = prepare(ds, requested, profile, self.default_charset)
        if transliterated:
            object.__setattr__(ds, _TRANSLITERATED, True)
            metrics.TRANSLITERATED.labels(str(ds.SpecificCharacterSet)).inc()
        if record.key and record.version and not _has_multi_item_sequences(record):
            keep_encodings(ds)
            with self._lock:
                self._kept[key] = ds
                while len(self._kept) > self.max_entries:
                    self._kept.popitem(last=False)
        return ds


def _has_multi_item_sequences(record: Record) -> bool:
    # An answer for a record whose sequences have several items depends on which items
    # matched, not only on the query's shape: such answers are not kept.
    return any(len(items) > 1 for items in record.items.values())
