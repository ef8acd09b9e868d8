"""Text from upstream, decoded as its source meant it, and text for a modality, in a
character set the modality reads. Pure functions; nothing here touches a network.

Reading (the DICOM MWL poller): :func:`decode_identifier` turns a C-FIND answer with
its raw bytes into a dataset of ``str`` values, decoding every text element *strictly*
with the answer's Specific Character Set (0008,0005) — any term pydicom knows,
including ISO 2022 code extensions. An answer that declares none but carries non-ASCII
bytes is decoded with the upstream's configured fallback:

* ``auto`` (default): UTF-8 when every non-ASCII value is valid UTF-8, else ISO_IR 100
  (brokers such as dcmtk ``wlmscpfs`` without ``-csk`` send their files' bytes
  undeclared, most often UTF-8);
* a DICOM term (``ISO_IR 100``, ``ISO_IR 192``, ``ISO_IR 126`` ...): always that.

A value that cannot be decoded (bytes invalid in the declared set, an unknown term or
escape sequence) raises :class:`UndecodableText`: the caller refuses that answer with
the reason; nothing is ever decoded "with replacement characters".

Writing (answers to a modality): :func:`transliterate` gives the documented Latin-1
form of a name a Latin-1 (ISO_IR 100) modality cannot show (see its docstring).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from pydicom.charset import (
    CODES_TO_ENCODINGS,
    ESC,
    TEXT_VR_DELIMS,
    _decode_escaped_fragment,
    default_encoding,
    python_encoding,
)
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

AUTO = "auto"
UTF8 = "ISO_IR 192"
LATIN1 = "ISO_IR 100"
TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})
_MULTI_VALUED_VRS = frozenset({"PN", "LO", "SH", "UC"})
_PN_DELIMS = TEXT_VR_DELIMS | {0x5E, 0x3D}  # '^' and '=' reset the code extension
_FRAGMENTS = re.compile(b"(^[^\x1b]+|[\x1b][^\x1b]*)")


class UndecodableText(ValueError):
    """An upstream value cannot be decoded as its character set says. ``reason`` is
    safe to log: it names the element and the character set, never the value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Decoded:
    """A decoded answer; ``fallback`` is the character set used for undeclared
    non-ASCII bytes (None when the answer declared its set or was all ASCII)."""

    dataset: Dataset
    fallback: str | None


def known_term(term: str) -> bool:
    return term in python_encoding


def check_fallback(setting: str) -> str:
    """Validate a fallback setting (``auto`` or a DICOM term); returns it."""
    if setting != AUTO and not known_term(setting):
        raise ValueError(
            f"unknown character set {setting!r} (use 'auto' or a DICOM "
            "Specific Character Set term such as 'ISO_IR 100')"
        )
    return setting


def _codecs(terms: list[str]) -> list[str]:
    if not terms:
        terms = [""]
    if not terms[0]:
        terms = ["ISO_IR 6", *terms[1:]]
    codecs = []
    for term in terms:
        codec = python_encoding.get(term.strip())
        if codec is None:
            raise UndecodableText(f"unknown Specific Character Set term {term.strip()!r}")
        codecs.append(codec)
    return codecs


def strict_decode(raw: bytes, terms: list[str], vr: str) -> str:
    """``raw`` decoded with the Specific Character Set ``terms``; raises
    :class:`UndecodableText` instead of ever substituting a character."""
    codecs = _codecs(terms)
    delimiters = _PN_DELIMS if vr == "PN" else TEXT_VR_DELIMS
    try:
        if ESC not in raw:
            return raw.decode(codecs[0])
        parts = []
        for fragment in _FRAGMENTS.findall(raw):
            if not fragment.startswith(ESC):
                parts.append(fragment.decode(codecs[0]))
                continue
            size = 4 if fragment.startswith((b"\x1b$(", b"\x1b$)")) else 3
            encoding = CODES_TO_ENCODINGS.get(fragment[:size], "")
            if encoding not in codecs and encoding != default_encoding:
                raise UndecodableText(
                    "escape sequence of a character set the answer does not declare"
                )
            parts.append(_decode_escaped_fragment(fragment, codecs, delimiters))
        return "".join(parts)
    except UnicodeError:
        raise UndecodableText(f"bytes not valid in {'/'.join(terms) or 'ISO_IR 6'}") from None


def _declared(ds: Dataset) -> list[str] | None:
    raw = ds.get_item(0x00080005)
    if raw is None:
        return None
    value = raw.value
    if isinstance(value, bytes):
        text = value.decode("ascii", "replace").strip(" \x00")
        return [t.strip() for t in text.split("\\")] if text else None
    if not value:
        return None
    return [
        str(v).strip()
        for v in (
            value
            if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"
            else [value]
        )
    ]


def _vr(tag: int, elem: DataElement | RawDataElement) -> str:
    if elem.VR and elem.VR != "UN":
        return str(elem.VR)
    try:  # implicit VR on the wire: the dictionary's
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def _raw_texts(ds: Dataset) -> list[bytes]:
    """Every raw non-ASCII text value in ``ds`` and its items."""
    out = []
    for tag in list(ds.keys()):
        elem = ds.get_item(tag)
        if elem is None:
            continue
        vr = _vr(tag, elem)
        if vr == "SQ":
            for item in ds[tag].value or []:
                out.extend(_raw_texts(item))
        elif vr in TEXT_VRS and isinstance(elem.value, bytes) and not elem.value.isascii():
            out.append(elem.value)
    return out


def choose_undeclared(raws: list[bytes], fallback: str) -> str:
    """The character set for undeclared non-ASCII ``raws`` under ``fallback``."""
    if fallback != AUTO:
        return fallback
    try:
        for raw in raws:
            raw.decode("utf-8")
    except UnicodeDecodeError:
        return LATIN1
    return UTF8


def decode_identifier(ds: Dataset, fallback: str = AUTO) -> Decoded:
    """A copy of ``ds`` (an answer as read from the wire) with every text value decoded
    strictly. Raises :class:`UndecodableText` (the reason names the element)."""
    terms = _declared(ds)
    used: str | None = None
    if terms is None:
        raws = _raw_texts(ds)
        if raws:
            used = choose_undeclared(raws, fallback)
            terms = [used]
        else:
            terms = ["ISO_IR 6"]
    return Decoded(_decode(ds, terms), used)


def _decode(ds: Dataset, terms: list[str]) -> Dataset:
    out = Dataset()
    for tag in list(ds.keys()):
        if tag == 0x00080005:
            continue
        elem = ds.get_item(tag)
        if elem is None:
            continue
        vr = _vr(tag, elem)
        if isinstance(elem, RawDataElement) and vr in TEXT_VRS and isinstance(elem.value, bytes):
            try:
                text = strict_decode(elem.value.rstrip(b" \x00"), terms, vr)
            except UndecodableText as exc:
                raise UndecodableText(f"{_keyword(tag)}: {exc.reason}") from None
            value: object = text
            if vr in _MULTI_VALUED_VRS and "\\" in text:
                value = text.split("\\")
            out.add(DataElement(tag, vr, value))
            continue
        full = ds[tag]
        if full.VR == "SQ":
            items = []
            for item in full.value or []:
                # An item may declare its own character set (PS3.5 6.1.2.5.1 lets a
                # sequence item override the dataset's).
                items.append(_decode(item, _declared(item) or terms))
            out.add(DataElement(tag, "SQ", items))
        else:
            out.add(DataElement(tag, full.VR, full.value))
    return out


def _keyword(tag: int) -> str:
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


# --- writing: names a Latin-1 modality can show ---------------------------------------
# Letters whose Unicode decomposition has no base letter, and Greek, spelt in Latin.
_SPECIAL = {
    "ł": "l",
    "Ł": "L",
    "đ": "d",
    "Đ": "D",
    "ħ": "h",
    "Ħ": "H",
    "ı": "i",
    "ŀ": "l",
    "Ŀ": "L",
    "ŉ": "n",
    "ŋ": "ng",
    "Ŋ": "NG",
    "œ": "oe",
    "Œ": "OE",
    "ſ": "s",
    "ŧ": "t",
    "Ŧ": "T",
    "ƒ": "f",
    "ə": "e",
    "Ə": "E",
    "ĸ": "k",
    "‘": "'",
    "’": "'",
    "‚": "'",
    "“": '"',
    "”": '"',
    "„": '"',
    "–": "-",
    "—": "-",
    "‐": "-",
    "‑": "-",
}
# Greek: ELOT 743 / ISO 843 (type 2, transcription simplified to one letter per letter)
_GREEK = {
    "α": "a",
    "β": "v",
    "γ": "g",
    "δ": "d",
    "ε": "e",
    "ζ": "z",
    "η": "i",
    "θ": "th",
    "ι": "i",
    "κ": "k",
    "λ": "l",
    "μ": "m",
    "ν": "n",
    "ξ": "x",
    "ο": "o",
    "π": "p",
    "ρ": "r",
    "σ": "s",
    "ς": "s",
    "τ": "t",
    "υ": "y",
    "φ": "f",
    "χ": "ch",
    "ψ": "ps",
    "ω": "o",
}


def _base(char: str) -> str:
    return unicodedata.normalize("NFD", char)[0]


def _greek(char: str) -> str | None:
    base = _base(char)
    lower = base.lower()
    if lower not in _GREEK:
        return None
    latin = _GREEK[lower]
    if base != lower:  # capital: capitalise the first letter (ΘΕΟ -> THEO handled below)
        latin = latin[0].upper() + latin[1:]
    return latin


def transliterate(text: str, codec: str = "latin-1") -> str:
    """``text`` with every character ``codec`` cannot encode replaced, by this rule:

    1. NFC first: a letter Latin-1 has precomposed (``â``, ``Ó``, ``ü``) stays as it is.
    2. Otherwise its base letter without accents (``ŵ``→``w``, ``ŷ``→``y``,
       ``ő``→``o``, ``č``→``c``), from the Unicode decomposition.
    3. Letters without a decomposition from a fixed table (``ł``→``l``, ``đ``→``d``,
       ``ß`` is Latin-1 and stays, ``œ``→``oe``, curly quotes → ``'``).
    4. Greek by ELOT 743 (ISO 843), one Latin spelling per letter, ``ου``→``ou``
       (``Γεωργία`` → ``Georgia``, ``Θεοδώρου`` → ``Theodorou``; ``θ``→``th``,
       ``χ``→``ch``, ``ψ``→``ps``, ``η``→``i``, ``υ``→``y``); a capital gives a
       capitalised spelling, and a word all in capitals stays all in capitals.
    5. Anything else (e.g. CJK): :class:`ValueError` — no ``?`` is ever sent; the caller
       answers in UTF-8 instead.
    """
    text = unicodedata.normalize("NFC", text)
    out: list[str] = []
    skip = False
    for i, char in enumerate(text):
        if skip:
            skip = False
            continue
        if _base(char).lower() == "ο" and i + 1 < len(text) and _base(text[i + 1]).lower() == "υ":
            pair = (
                "OU"
                if _base(char).isupper() and _base(text[i + 1]).isupper()
                else "Ou"
                if _base(char).isupper()
                else "ou"
            )
            out.append(pair)
            skip = True
            continue
        try:
            char.encode(codec)
            out.append(char)
            continue
        except UnicodeEncodeError:
            pass
        if char in _SPECIAL:
            out.append(_SPECIAL[char])
            continue
        greek = _greek(char)
        if greek is not None:
            if len(greek) > 1 and char.isupper() and _word_upper(text, i):
                greek = greek.upper()
            out.append(greek)
            continue
        base = "".join(
            c for c in unicodedata.normalize("NFD", char) if not unicodedata.combining(c)
        )
        base = unicodedata.normalize("NFC", base)
        if base and base != char:
            try:
                base.encode(codec)
                out.append(base)
                continue
            except UnicodeEncodeError:
                pass
        raise ValueError("character without a transliteration")
    return "".join(out)


def _word_upper(text: str, index: int) -> bool:
    start = index
    while start > 0 and text[start - 1].isalpha():
        start -= 1
    end = index
    while end < len(text) and text[end].isalpha():
        end += 1
    word = text[start:end]
    return len(word) > 1 and word.isupper()
