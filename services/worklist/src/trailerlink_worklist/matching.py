"""DICOM C-FIND matching for the Modality Worklist, with no network in sight.

:func:`compile_query` turns a C-FIND identifier into a :class:`Query`; a
:class:`Query` says whether a :class:`Record` matches (:meth:`Query.matches`) and builds
the answer for it (:meth:`Query.response`). The rules are PS3.4 C.2.2.2:

* universal matching: an empty value (or ``*`` alone) matches everything, even empty;
* single value matching; case-insensitive for PN unless configured otherwise (PS3.4
  C.2.2.2.1 lets an SCP ignore case in names), trailing empty name components ignored;
* wildcard matching (``*``, ``?``) for text VRs other than DA, TM, DT and UI;
* range matching for DA, TM and DT (``a-b``, ``a-``, ``-b``), and optionally the
  combined date-time matching of a DA/TM pair (C.2.2.2.5.1, extended negotiation);
* list of UID matching for UI (``uid1\\uid2``);
* sequence matching: a record matches when one of its items matches the query's item;
  only the matching items are returned, with the requested attributes.

A record never carries an attribute for the query's sake: an attribute the record
lacks (one the worklist does not hold, e.g. a private or a retired key) is returned
empty and ignored for matching, as dcmtk ``wlmscpfs`` does — an unknown key never turns
a day into zero matches.

Modality quirk: some modalities put keys that belong in the Scheduled Procedure Step
Sequence at the top level (Modality, Scheduled Station AE Title and Name, SPS Start
Date/Time, Location, Performing Physician, SPS ID/Description). Such a key is matched as
if it were in the sequence (a key given in the sequence as well wins there) and answered
where the modality put it, with the value of the first matching item.

Person names: matched after NFC normalisation, so a query typed with combining accents
finds the precomposed name; case-insensitively (Unicode case folding) by default,
case-sensitively with ``pn_case_sensitive`` (``TRAILERLINK_PN_CASE_SENSITIVE``).
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

SPECIFIC_CHARACTER_SET = 0x00080005
SPS_START_DATE = 0x00400002
SPS_START_TIME = 0x00400003
SPS_SEQUENCE = 0x00400100
# Attributes of a Scheduled Procedure Step item (PS3.4 K.6-1) that modalities are known
# to send at the top level instead.
SPS_ITEM_KEYS = frozenset(
    {
        0x00080060,  # Modality
        0x00400001,  # Scheduled Station AE Title
        0x00400002,  # Scheduled Procedure Step Start Date
        0x00400003,  # Scheduled Procedure Step Start Time
        0x00400006,  # Scheduled Performing Physician's Name
        0x00400007,  # Scheduled Procedure Step Description
        0x00400009,  # Scheduled Procedure Step ID
        0x00400010,  # Scheduled Station Name
        0x00400011,  # Scheduled Procedure Step Location
    }
)

_NO_WILDCARD_VRS = frozenset(
    {
        "DA",
        "TM",
        "DT",
        "UI",
        "SQ",
        "US",
        "SS",
        "UL",
        "SL",
        "FL",
        "FD",
        "IS",
        "DS",
        "AT",
        "OB",
        "OW",
        "UN",
        "SV",
        "UV",
    }
)
_RANGE_VRS = frozenset({"DA", "TM", "DT"})


class QueryError(ValueError):
    """The identifier cannot be a worklist query (wrong VR, bad range, nested too deep)."""


# --- records ---------------------------------------------------------------------------
@dataclass
class Record:
    """A worklist entry prepared for matching: values by tag, items for sequences."""

    values: dict[int, tuple[str, tuple[str, ...]]]
    items: dict[int, list[Record]]
    dataset: Dataset
    key: str = ""
    version: str = ""  # changes whenever the record's content does (answers kept by it)


def compile_record(ds: Dataset, key: str = "") -> Record:
    """Prepare a unicode dataset (see ``model.to_dataset``) for matching."""
    values: dict[int, tuple[str, tuple[str, ...]]] = {}
    items: dict[int, list[Record]] = {}
    for elem in ds:
        tag = int(elem.tag)
        if elem.VR == "SQ":
            items[tag] = [compile_record(item) for item in elem.value or []]
        elif tag != SPECIFIC_CHARACTER_SET and elem.tag.group != 0:
            values[tag] = (elem.VR, _as_strings(elem.value))
    return Record(values, items, ds, key)


def _as_strings(value: object) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, MultiValue | list | tuple):
        return tuple(str(v).strip() for v in value if str(v).strip())
    text = str(value).strip()
    return (text,) if text else ()


# --- query nodes -------------------------------------------------------------------------
@dataclass
class _Key:
    tag: int
    vr: str
    kind: str  # universal | single | wildcard | range | sequence
    values: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    low: str = ""
    high: str = ""
    sub: Query | None = None
    hoisted: bool = False  # a top-level key matched inside the SPS item
    answered: bool = True  # False: a sequence made up for hoisted keys
    whole_items: bool = False  # a zero-length sequence key: items answered whole


@dataclass
class Query:
    """A compiled C-FIND identifier (or one sequence item of it)."""

    keys: list[_Key] = field(default_factory=list)
    pn_case_sensitive: bool = False
    combined_datetime: bool = False
    _shape: tuple[object, ...] | None = field(default=None, repr=False, compare=False)

    # .. matching ...........................................................................
    def matches(self, record: Record) -> bool:
        """True when ``record`` satisfies every matching key."""
        pair = self._datetime_pair()
        for key in self.keys:
            if pair and key.tag in (SPS_START_DATE, SPS_START_TIME):
                continue
            if key.kind == "universal" or key.hoisted:
                continue
            if key.kind == "sequence":
                if key.tag in record.items and not self._matching_items(key, record):
                    return False
                continue
            held = record.values.get(key.tag)
            if held is None:
                continue  # a key the worklist does not hold: ignored, like wlmscpfs
            if not any(self._value_matches(key, v) for v in held[1]):
                return False
        return not pair or _combined_match(pair, record)

    def _datetime_pair(self) -> tuple[_Key, _Key] | None:
        if not self.combined_datetime:
            return None
        by_tag = {k.tag: k for k in self.keys if not k.hoisted}
        date, time = by_tag.get(SPS_START_DATE), by_tag.get(SPS_START_TIME)
        if date is None or time is None or "universal" in (date.kind, time.kind):
            return None
        return date, time

    def _matching_items(self, key: _Key, record: Record) -> list[Record]:
        items = record.items.get(key.tag, [])
        if key.sub is None:  # zero-length sequence: universal, every item returned
            return items
        return [item for item in items if key.sub.matches(item)]

    def _value_matches(self, key: _Key, value: str) -> bool:
        if key.kind == "wildcard":
            assert key.pattern is not None
            return key.pattern.fullmatch(self._fold(key.vr, value)) is not None
        if key.kind == "range":
            try:
                normal = _normalise(key.vr, value, high=False)
            except QueryError:
                return False
            return (not key.low or normal >= key.low) and (not key.high or normal <= key.high)
        if key.vr in _RANGE_VRS:
            try:
                return _normalise(key.vr, value, high=False) in key.values
            except QueryError:
                return False  # a malformed stored value matches no date
        target = self._fold(key.vr, value)
        return target in key.values

    def _fold(self, vr: str, value: str) -> str:
        if vr == "PN":
            value = _nfc(value.rstrip("^ ="))
            if not self.pn_case_sensitive:
                return value.casefold()
        return value

    # .. answers .............................................................................
    def response(self, record: Record) -> Dataset:
        """The identifier of the C-FIND response for ``record`` (unicode values).

        Holds exactly the query's attributes: the record's value, or empty when the
        record has none; for a sequence, its matching items reduced the same way.
        """
        ds = Dataset()
        for key in self.keys:
            if not key.answered:
                continue
            if key.hoisted:
                ds.add(self._hoisted_answer(key, record))
                continue
            if key.kind == "sequence":
                items = self._matching_items(key, record)
                if key.sub is None or key.whole_items:
                    ds.add(DataElement(key.tag, "SQ", [_copy(i.dataset) for i in items]))
                else:
                    ds.add(DataElement(key.tag, "SQ", [key.sub.response(i) for i in items]))
                continue
            if key.tag in record.values:
                elem = record.dataset[key.tag]
                ds.add(DataElement(key.tag, elem.VR, elem.value))
            else:
                ds.add(DataElement(key.tag, key.vr, None))
        return ds

    def _hoisted_answer(self, key: _Key, record: Record) -> DataElement:
        sps = next((k for k in self.keys if k.tag == SPS_SEQUENCE), None)
        items = self._matching_items(sps, record) if sps is not None else []
        for item in items:
            if key.tag in item.values:
                elem = item.dataset[key.tag]
                return DataElement(key.tag, elem.VR, elem.value)
        return DataElement(key.tag, key.vr, None)

    def shape(self) -> tuple[object, ...]:
        """What the answer's structure depends on (for caching encoded answers).
        Computed once: a compiled query is not changed afterwards."""
        if self._shape is None:
            self._shape = tuple(
                (
                    k.tag,
                    k.vr,
                    k.kind == "sequence",
                    k.sub.shape() if k.sub else None,
                    k.hoisted,
                    k.answered,
                    k.whole_items,
                )
                for k in self.keys
            )
        return self._shape


def _copy(ds: Dataset) -> Dataset:
    out = Dataset()
    for elem in ds:
        out.add(DataElement(elem.tag, elem.VR, elem.value))
    return out


# --- compiling a query ---------------------------------------------------------------
def compile_query(
    identifier: Dataset, *, pn_case_sensitive: bool = False, combined_datetime: bool = False
) -> Query:
    """Compile a C-FIND identifier. Raises :class:`QueryError` when it cannot be one."""
    return _compile(identifier, pn_case_sensitive, combined_datetime, depth=0)


def _compile(ds: Dataset, pn_cs: bool, combined: bool, depth: int) -> Query:
    if depth > 2:
        raise QueryError("sequence nested too deeply")
    query = Query(pn_case_sensitive=pn_cs, combined_datetime=combined)
    for elem in ds:
        tag = int(elem.tag)
        if tag == SPECIFIC_CHARACTER_SET or elem.tag.group in (0x0000, 0x0002):
            continue
        if elem.tag.is_private:
            continue
        vr = elem.VR
        if vr == "SQ":
            items = list(elem.value or [])
            if len(items) > 1:
                raise QueryError("a sequence key may hold one item only")
            sub = _compile(items[0], pn_cs, combined, depth + 1) if items else None
            query.keys.append(_Key(tag, vr, "sequence", sub=sub))
            continue
        query.keys.append(_compile_key(tag, vr, elem.value, pn_cs))
    if depth == 0:
        _hoist_sps_keys(query, pn_cs, combined)
    return query


def _hoist_sps_keys(query: Query, pn_cs: bool, combined: bool) -> None:
    """Match top-level SPS item keys inside the SPS Sequence (see the module doc)."""
    top = [k for k in query.keys if k.tag in SPS_ITEM_KEYS and k.kind != "sequence"]
    if not top:
        return
    sps = next((k for k in query.keys if k.tag == SPS_SEQUENCE), None)
    if sps is None:
        sps = _Key(SPS_SEQUENCE, "SQ", "sequence", sub=None, answered=False)
        query.keys.append(sps)
    if sps.sub is None:
        sps.sub = Query(pn_case_sensitive=pn_cs, combined_datetime=combined)
        sps.whole_items = sps.answered
    inside = {k.tag: k for k in sps.sub.keys}
    for key in top:
        key.hoisted = True
        if key.kind == "universal":
            continue
        given = inside.get(key.tag)
        if given is None:  # matched in the item, answered at the top only
            sps.sub.keys.append(dataclasses.replace(key, hoisted=False, answered=False))
        elif given.kind == "universal":
            sps.sub.keys[sps.sub.keys.index(given)] = dataclasses.replace(key, hoisted=False)
    sps.sub._shape = None


def _compile_key(tag: int, vr: str, raw: object, pn_cs: bool) -> _Key:
    values = _as_strings(raw)
    if vr == "PN":
        values = tuple(_nfc(v.rstrip("^ =")) for v in values)
        values = tuple(v for v in values if v)
    if not values or values == ("*",):
        return _Key(tag, vr, "universal")
    if vr in _RANGE_VRS and len(values) == 1 and "-" in values[0]:
        low, _, high = values[0].partition("-")
        if "-" in high:
            raise QueryError(f"bad range for {Tag(tag)}")
        low_n = _normalise(vr, low.strip(), high=False) if low.strip() else ""
        high_n = _normalise(vr, high.strip(), high=True) if high.strip() else ""
        if not low_n and not high_n:
            return _Key(tag, vr, "universal")
        return _Key(tag, vr, "range", low=low_n, high=high_n)
    fold = (lambda v: v) if (vr != "PN" or pn_cs) else str.casefold
    if vr not in _NO_WILDCARD_VRS and len(values) == 1 and any(c in values[0] for c in "*?"):
        return _Key(tag, vr, "wildcard", pattern=_wildcard(fold(values[0])))
    if vr in _RANGE_VRS:
        return _Key(tag, vr, "single", values=tuple(_normalise(vr, v, high=False) for v in values))
    return _Key(tag, vr, "single", values=tuple(fold(v) for v in values))


def _nfc(text: str) -> str:
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def _wildcard(text: str) -> re.Pattern[str]:
    parts = []
    for char in text:
        parts.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def _normalise(vr: str, value: str, *, high: bool) -> str:
    """A DA/TM/DT value as a fixed-width comparable string. A truncated upper bound
    extends to the end of its period (``-12`` includes 12:59:59)."""
    value = value.strip().replace(":", "")
    if vr == "DA":
        value = value.replace(".", "")  # ACR-NEMA style YYYY.MM.DD
        if len(value) != 8 or not value.isdigit():
            raise QueryError("bad date")
        return value
    if vr == "TM":
        return _pad_time(value, high)
    # DT: YYYYMMDDHHMMSS.FFFFFF&ZZXX (an offset is ignored: one trailer, one zone)
    if len(value) > 8:
        value = re.split(r"[+-]", value, maxsplit=1)[0]
    date, time = value[:8], value[8:]
    if len(date) not in (4, 6, 8) or not date.isdigit():
        raise QueryError("bad date-time")
    date += ("1231" if high else "0101")[len(date) - 4 :]
    return date + _pad_time(time, high)


def _pad_time(value: str, high: bool) -> str:
    whole, _, fraction = value.partition(".")
    if len(whole) not in (0, 2, 4, 6) or not (whole.isdigit() or not whole):
        raise QueryError("bad time")
    if fraction and not fraction.isdigit():
        raise QueryError("bad time")
    whole += ("235959" if high else "000000")[len(whole) :]
    if not fraction:
        fraction = "999999" if high else "000000"
    return f"{whole}.{fraction.ljust(6, '0')[:6]}"


def _combined_match(pair: tuple[_Key, _Key], record: Record) -> bool:
    """PS3.4 C.2.2.2.5.1: the date and time keys form one date-time range."""
    date_key, time_key = pair
    _vr, dates = record.values.get(SPS_START_DATE, ("", ()))
    _vr, times = record.values.get(SPS_START_TIME, ("", ()))
    if not dates:
        return False
    moment = _normalise("DA", dates[0], high=False) + _pad_time(
        times[0].replace(":", "") if times else "", high=False
    )

    def bound(which: str) -> str:
        d = date_key.low if which == "low" else date_key.high
        t = time_key.low if which == "low" else time_key.high
        if date_key.kind == "single":
            d = date_key.values[0]
        if time_key.kind == "single":
            t = time_key.values[0]
        if not d:
            return ""
        if not t:
            t = "235959.999999" if which == "high" else "000000.000000"
        return d + t

    low, high = bound("low"), bound("high")
    return (not low or moment >= low) and (not high or moment <= high)


def find(query: Query, records: Iterable[Record]) -> list[Record]:
    """The records that match, in the given order."""
    return [r for r in records if query.matches(r)]


def keys_of(query: Query) -> Sequence[int]:
    return [k.tag for k in query.keys]
