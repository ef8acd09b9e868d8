"""HL7 v2 messages in and out: what an inbound message asks of the worklist, and the
messages the worklist sends upstream. Pure functions over python-hl7's parser.

Inbound (from the Trust's integration engine, NBSS feed), mapped after IHE RAD-4/RAD-13:

============  ======================================  =====================================
message       meaning                                  worklist operation
============  ======================================  =====================================
SIU^S12/S13   new booking / rescheduled                add or update the step
SIU^S14       booking modified                         update the step
SIU^S15/S17   booking cancelled / deleted              cancel the step
SIU^S26       did not attend                           status "did not attend"
ORM^O01 NW    new order                                add the step
ORM^O01 XO    order changed                            update the step
ORM^O01 CA/DC order cancelled / discontinued           cancel the step
ADT^A08/A31   patient information updated              update demographics of her steps
============  ======================================  =====================================

Field mapping: patient from PID (PID-3 identifier, the NHS number ``NH`` repetition
preferred; PID-5 name; PID-7 birth date; PID-8 sex), referring physician PV1-8, admission
PV1-19. SIU: accession number SCH-2 (filler appointment ID; SCH-1 if empty), requested
procedure ID SCH-1, start AIS-4 (else SCH-11.4, TQ1-7), description AIS-3.2, location
AIL-3.1. ORM: accession OBR-18 (else ORC-3), requested procedure ID OBR-19, SPS ID
OBR-20, description OBR-4.2, modality OBR-24, start TQ1-7 (else OBR-27.4, ORC-7.4),
location PV1-3.1. Study Instance UID from ZDS-1 when present. The SPS ID defaults to
the accession number.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

import hl7

from trailerlink_worklist.model import ScheduledStep, StepStatus, step_key

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8")
# MSH-18 (HL7 table 0211) -> Python codec. A few spellings integration engines send
# in place of the table's (UTF-8, ISO-8859-1) are accepted as well.
_MSH18_CODECS = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    **{f"8859/{n}": f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 15)},
    "ISO IR100": "latin-1",
    "ISO IR192": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
    "ISO-8859-1": "latin-1",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
}
AUTO = "auto"

# HL7 table 0357 error codes
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_PROCESSING_ID = "202"
UNSUPPORTED_VERSION_ID = "203"
APPLICATION_INTERNAL_ERROR = "207"
SEGMENT_SEQUENCE_ERROR = "100"


class Hl7Refused(Exception):
    """The message is refused: ``ack`` is AR (reject) or AE (error), ``code`` from 0357."""

    def __init__(self, ack: str, code: str, text: str) -> None:
        super().__init__(text)
        self.ack = ack
        self.code = code
        self.text = text


# --- actions an inbound message asks for ----------------------------------------------
@dataclass(frozen=True)
class Upsert:
    step: ScheduledStep


@dataclass(frozen=True)
class Cancel:
    key: str


@dataclass(frozen=True)
class SetStatus:
    key: str
    status: StepStatus


@dataclass(frozen=True)
class UpdatePatient:
    patient_id: str
    update: Callable[[ScheduledStep], ScheduledStep]


@dataclass(frozen=True)
class Ignore:
    reason: str


Action = Upsert | Cancel | SetStatus | UpdatePatient | Ignore


# --- decoding --------------------------------------------------------------------------
def msh18_codec(name: str) -> str | None:
    """The Python codec of an MSH-18 value (table 0211), or None if we do not know it."""
    return _MSH18_CODECS.get(" ".join(name.upper().split()))


def decode(raw: bytes, default_encoding: str = AUTO) -> tuple[str, str, str | None]:
    """The message text, decoded as MSH-18 says, and the codec used; the third value
    names the fallback used for an undeclared message with non-ASCII bytes (else None).

    MSH-18's first repetition is the message's character set. Without one:
    ``default_encoding`` — ``auto`` is strict UTF-8 if the bytes are valid UTF-8, else
    ISO 8859-1; or a table 0211 name or Python codec. Raises :class:`Hl7Refused` (AR)
    for an unknown MSH-18 or bytes that are not valid in it: never a replacement
    character."""
    head = raw[:1024].decode("latin-1")
    charset = ""
    if head.startswith("MSH") and len(head) > 8:
        sep, encoding_chars = head[3], head[4:8]
        first = head.split("\r", 1)[0].split("\n", 1)[0]
        fields = first.split(sep)
        if len(fields) > 17:
            charset = fields[17].split(encoding_chars[1])[0].split(encoding_chars[0])[0]
            charset = charset.strip()
    fallback = None
    if charset:
        codec = msh18_codec(charset)
        if codec is None:
            raise Hl7Refused("AR", DATA_TYPE_ERROR, "unsupported character set (MSH-18)")
    elif raw.isascii():
        codec = "ascii"
    elif default_encoding.lower() == AUTO:
        try:
            raw.decode("utf-8")
            codec = "utf-8"
        except UnicodeDecodeError:
            codec = "latin-1"
        fallback = codec
    else:
        codec = msh18_codec(default_encoding) or default_encoding
        fallback = codec
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError:
        raise Hl7Refused("AR", DATA_TYPE_ERROR, "message is not in its character set") from None
    except LookupError:
        raise Hl7Refused(
            "AR", APPLICATION_INTERNAL_ERROR, "configured HL7 encoding unknown"
        ) from None
    return text.replace("\r\n", "\r").replace("\n", "\r").strip("\r"), codec, fallback


def parse(text: str, codec: str = "utf-8") -> hl7.Message:
    """Parse and check the header. Raises :class:`Hl7Refused` (AR) when it cannot be
    understood at all. ``codec`` (the message's character set) decodes ``\\Xhh\\``."""
    if not text.startswith("MSH") or len(text) < 8:
        raise Hl7Refused("AR", SEGMENT_SEQUENCE_ERROR, "message does not start with MSH")
    try:
        message = hl7.parse(text)
    except Exception:
        raise Hl7Refused("AR", SEGMENT_SEQUENCE_ERROR, "message cannot be parsed") from None
    message.trailerlink_codec = codec
    message.trailerlink_encoding = (text[3], *text[4:8])  # field, comp, rep, esc, sub
    if not field(message, "MSH", 10):
        raise Hl7Refused("AR", REQUIRED_FIELD_MISSING, "MSH-10 message control ID missing")
    if field(message, "MSH", 11) not in ("P", "T"):
        raise Hl7Refused("AR", UNSUPPORTED_PROCESSING_ID, "processing ID must be P or T")
    version = field(message, "MSH", 12)
    if version and version not in SUPPORTED_VERSIONS:
        raise Hl7Refused("AR", UNSUPPORTED_VERSION_ID, "unsupported HL7 version")
    return message


def _encoding(message: hl7.Message) -> tuple[str, str, str, str, str]:
    return getattr(message, "trailerlink_encoding", ("|", "^", "~", "\\", "&"))


def _raw_field(message: hl7.Message, segment: str, number: int) -> str:
    try:
        value = message.segment(segment)(number)
    except (KeyError, IndexError):
        return ""
    return str(value or "")


def field(
    message: hl7.Message,
    segment: str,
    number: int,
    component: int = 1,
    repeat: int = 1,
    *,
    kind: str = "id",
) -> str:
    """One component of a field of the first ``segment`` (its first subcomponent), as
    text with HL7 escapes decoded ('' when absent). ``kind`` says what characters the
    value may hold (see :func:`clean`)."""
    if segment == "MSH" and number <= 2:
        return _raw_field(message, segment, number)
    _fs, comp, rep, _esc, sub = _encoding(message)
    raw = _raw_field(message, segment, number)
    reps = raw.split(rep)
    if repeat > len(reps):
        return ""
    comps = reps[repeat - 1].split(comp)
    if component > len(comps):
        return ""
    value = comps[component - 1].split(sub)[0]
    return clean(unescape(message, value, f"{segment}-{number}"), kind, f"{segment}-{number}")


def repetitions(
    message: hl7.Message, segment: str, number: int, *, kind: str = "id"
) -> list[list[str]]:
    """Every repetition of a field of the first ``segment`` as its list of components
    (each its first subcomponent, escapes decoded, checked as ``kind``)."""
    _fs, comp, rep, _esc, sub = _encoding(message)
    raw = _raw_field(message, segment, number)
    if not raw.strip():
        return []
    what = f"{segment}-{number}"
    return [
        [clean(unescape(message, c.split(sub)[0], what), kind, what).strip() for c in r.split(comp)]
        for r in raw.split(rep)
        if r.strip()
    ]


# --- escapes and what a DICOM value can hold -----------------------------------------------
_FORMATTING_AS_SPACE = (".br", ".sp")
_FORMATTING_DROPPED = (".in", ".ti", ".sk", ".ce", ".fi", ".nf")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def unescape(message: hl7.Message, value: str, what: str) -> str:
    """``value`` with HL7 escape sequences decoded (v2.5 2.7): ``\\F\\ \\S\\ \\T\\
    \\R\\ \\E\\`` the delimiters, ``\\Xhh..\\`` bytes in the message's character set,
    ``\\H\\``/``\\N\\`` highlighting dropped, ``\\.br\\``/``\\.sp\\`` a line break
    (later a space), other formatting commands dropped. ``\\C..\\``/``\\M..\\``
    (character set switches), ``\\Z..\\`` (local) and malformed escapes are refused (AE):
    guessing would store text the sender did not mean."""
    fs, comp, rep, esc, sub = _encoding(message)
    if esc not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char != esc:
            out.append(char)
            i += 1
            continue
        end = value.find(esc, i + 1)
        if end < 0:
            raise Hl7Refused("AE", DATA_TYPE_ERROR, f"{what}: unterminated escape sequence")
        body = value[i + 1 : end]
        i = end + 1
        simple = {"F": fs, "S": comp, "T": sub, "R": rep, "E": esc}
        if body in simple:
            out.append(simple[body])
        elif body in ("H", "N"):
            continue
        elif body.startswith("X") and len(body) > 1:
            digits = body[1:]
            try:
                data = bytes.fromhex(digits)
                out.append(data.decode(getattr(message, "trailerlink_codec", "utf-8")))
            except (ValueError, UnicodeDecodeError):
                raise Hl7Refused(
                    "AE",
                    DATA_TYPE_ERROR,
                    f"{what}: \\X escape is not text in the message's character set",
                ) from None
        elif body.startswith(_FORMATTING_AS_SPACE):
            out.append("\n")
        elif body.startswith(_FORMATTING_DROPPED):
            continue
        elif body[:1] in ("C", "M"):
            raise Hl7Refused(
                "AE", DATA_TYPE_ERROR, f"{what}: character set switching escape not supported"
            )
        else:
            raise Hl7Refused("AE", DATA_TYPE_ERROR, f"{what}: unknown escape sequence")
    return "".join(out)


def clean(value: str, kind: str, what: str) -> str:
    """``value`` made safe for the DICOM element it goes to, by this rule:

    * ``name`` (a PN component): control characters (an escaped line break or tab)
      become one space; a backslash (DICOM's value separator), ``^`` or ``=`` (PN's
      component and group delimiters) inside a component is refused (AE) — replacing
      them would change the name, and splitting would give the modality several names;
    * ``text`` (descriptions, locations): control characters become a space, a
      backslash becomes ``/``;
    * ``id`` (identifiers, codes, dates): a backslash or control character is refused.

    Case is kept as the sender gave it."""
    if kind == "id":
        if "\\" in value or _CONTROL.search(value):
            raise Hl7Refused(
                "AE",
                DATA_TYPE_ERROR,
                f"{what}: holds a backslash or control character, which the "
                "DICOM value cannot hold",
            )
        return value
    value = " ".join(_CONTROL.sub(" ", value).split()) if _CONTROL.search(value) else value
    if kind == "name":
        if any(c in value for c in "\\^="):
            raise Hl7Refused(
                "AE",
                DATA_TYPE_ERROR,
                f"{what}: a name holds a backslash, ^ or =, which a DICOM person name cannot hold",
            )
        return value
    return value.replace("\\", "/")


def message_type(message: hl7.Message) -> tuple[str, str]:
    return field(message, "MSH", 9, 1), field(message, "MSH", 9, 2)


def _escape(text: str) -> str:
    return (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
        .replace("\r", " ")
        .replace("\n", " ")
    )


# --- interpreting --------------------------------------------------------------------------
def interpret(message: hl7.Message) -> Action:
    """What ``message`` asks of the worklist. Raises :class:`Hl7Refused`."""
    kind, trigger = message_type(message)
    if kind == "SIU":
        return _siu(message, trigger)
    if kind == "ORM" and trigger == "O01":
        return _orm(message)
    if kind == "ADT" and trigger in ("A08", "A31"):
        patient_id, update = _patient_update(message)
        return UpdatePatient(patient_id, update)
    if kind in ("SIU", "ORM", "ADT"):
        raise Hl7Refused("AR", UNSUPPORTED_EVENT_CODE, "unsupported trigger event")
    raise Hl7Refused("AR", UNSUPPORTED_MESSAGE_TYPE, "unsupported message type")


def _siu(message: hl7.Message, trigger: str) -> Action:
    if trigger not in ("S12", "S13", "S14", "S15", "S17", "S26"):
        raise Hl7Refused("AR", UNSUPPORTED_EVENT_CODE, "unsupported SIU trigger event")
    if not _has(message, "SCH"):
        raise Hl7Refused("AE", REQUIRED_FIELD_MISSING, "SCH segment missing")
    accession = field(message, "SCH", 2) or field(message, "SCH", 1)
    if not accession:
        raise Hl7Refused("AE", REQUIRED_FIELD_MISSING, "SCH-2 appointment ID missing")
    sps_id = accession
    if trigger in ("S15", "S17"):
        return Cancel(step_key(accession, sps_id))
    if trigger == "S26":
        return SetStatus(step_key(accession, sps_id), StepStatus.DID_NOT_ATTEND)
    start = field(message, "AIS", 4) or field(message, "SCH", 11, 4) or field(message, "TQ1", 7)
    date, time = _datetime(start, "AIS-4 start date/time")
    step = ScheduledStep(
        accession_number=accession,
        scheduled_procedure_step_id=sps_id,
        scheduled_date=date,
        scheduled_time=time,
        requested_procedure_id=field(message, "SCH", 1) or accession,
        requested_procedure_description=field(message, "AIS", 3, 2, kind="text"),
        scheduled_step_description=field(message, "AIS", 3, 2, kind="text"),
        scheduled_location=field(message, "AIL", 3, 1, kind="text"),
        study_instance_uid=field(message, "ZDS", 1),
        **_patient(message),
    )
    return Upsert(step)


def _orm(message: hl7.Message) -> Action:
    control = field(message, "ORC", 1)
    if control not in ("NW", "XO", "CA", "DC", "SC", "OC"):
        raise Hl7Refused("AE", DATA_TYPE_ERROR, "unsupported order control (ORC-1)")
    accession = field(message, "OBR", 18) or field(message, "ORC", 3) or field(message, "OBR", 3)
    if not accession:
        raise Hl7Refused("AE", REQUIRED_FIELD_MISSING, "accession number (OBR-18) missing")
    sps_id = field(message, "OBR", 20) or accession
    if control in ("CA", "DC", "OC"):
        return Cancel(step_key(accession, sps_id))
    if control == "SC":
        return Ignore("status change")
    start = field(message, "TQ1", 7) or field(message, "OBR", 27, 4) or field(message, "ORC", 7, 4)
    date, time = _datetime(start, "TQ1-7 start date/time")
    step = ScheduledStep(
        accession_number=accession,
        scheduled_procedure_step_id=sps_id,
        scheduled_date=date,
        scheduled_time=time,
        requested_procedure_id=field(message, "OBR", 19) or accession,
        requested_procedure_description=field(message, "OBR", 4, 2, kind="text"),
        scheduled_step_description=field(message, "OBR", 4, 2, kind="text"),
        modality=field(message, "OBR", 24),
        scheduled_location=field(message, "PV1", 3, 1, kind="text"),
        study_instance_uid=field(message, "ZDS", 1),
        **_patient(message),
    )
    return Upsert(step)


def _has(message: hl7.Message, segment: str) -> bool:
    try:
        return bool(message.segments(segment))
    except KeyError:
        return False


def _datetime(value: str, what: str) -> tuple[str, str]:
    digits = re.sub(r"[^0-9]", "", value.split("+")[0].split("-")[0])
    if len(digits) < 8:
        raise Hl7Refused("AE", REQUIRED_FIELD_MISSING, f"{what} missing")
    try:
        datetime.strptime(digits[:8], "%Y%m%d")
    except ValueError:
        raise Hl7Refused("AE", DATA_TYPE_ERROR, f"{what} is not a date") from None
    time = (digits[8:14] + "0000")[:6] if len(digits) > 8 else ""
    if time and not (int(time[:2]) < 24 and int(time[2:4]) < 60 and int(time[4:6]) < 60):
        raise Hl7Refused("AE", DATA_TYPE_ERROR, f"{what} is not a time")
    return digits[:8], time


def _patient_identifier(message: hl7.Message) -> tuple[str, str]:
    reps = repetitions(message, "PID", 3)
    chosen = next((r for r in reps if len(r) > 4 and r[4] == "NH"), reps[0] if reps else [])
    patient_id = chosen[0] if chosen else ""
    issuer = chosen[3] if len(chosen) > 3 else ""
    return patient_id, issuer


def _name(components: list[str]) -> str:
    # XPN: family^given^middle^suffix^prefix -> DICOM PN: family^given^middle^prefix^suffix
    family, given, middle, suffix, prefix = (components + [""] * 5)[:5]
    return "^".join((family, given, middle, prefix, suffix)).rstrip("^")


class _Patient(TypedDict):
    """The patient and visit fields of a :class:`ScheduledStep` an order carries."""

    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    referring_physician_name: str
    admission_id: str


def _patient(message: hl7.Message) -> _Patient:
    if not _has(message, "PID"):
        raise Hl7Refused("AE", REQUIRED_FIELD_MISSING, "PID segment missing")
    patient_id, issuer = _patient_identifier(message)
    if not patient_id:
        raise Hl7Refused("AE", REQUIRED_FIELD_MISSING, "PID-3 patient identifier missing")
    names = repetitions(message, "PID", 5, kind="name")
    birth = field(message, "PID", 7)
    if birth:
        birth = re.sub(r"[^0-9]", "", birth)[:8]
        try:
            datetime.strptime(birth, "%Y%m%d")
        except ValueError:
            raise Hl7Refused("AE", DATA_TYPE_ERROR, "PID-7 birth date is not a date") from None
    sex = field(message, "PID", 8).upper()
    sex = {"F": "F", "M": "M", "O": "O", "U": "O", "A": "O", "N": "O"}.get(sex, "")
    referring = repetitions(message, "PV1", 8, kind="name")
    referring_name = ""
    if referring and len(referring[0]) > 1:
        referring_name = _name(referring[0][1:])
    return {
        "patient_id": patient_id,
        "issuer_of_patient_id": issuer,
        "patient_name": _name(names[0]) if names else "",
        "patient_birth_date": birth,
        "patient_sex": sex,
        "referring_physician_name": referring_name,
        "admission_id": field(message, "PV1", 19),
    }


def _patient_update(message: hl7.Message) -> tuple[str, Callable[[ScheduledStep], ScheduledStep]]:
    details = _patient(message)

    def update(step: ScheduledStep) -> ScheduledStep:
        changes = {
            k: details[k]
            for k in ("patient_name", "patient_birth_date", "patient_sex")
            if details[k]
        }
        if details["issuer_of_patient_id"]:
            changes["issuer_of_patient_id"] = details["issuer_of_patient_id"]
        return step.replace(**changes)

    return details["patient_id"], update


# --- outbound ------------------------------------------------------------------------------
def _ts(when: datetime | None = None) -> str:
    return (when or datetime.now()).strftime("%Y%m%d%H%M%S")


def _msh(
    application: str,
    facility: str,
    receiver: str,
    receiver_facility: str,
    kind: str,
    control_id: str,
    version: str = "2.5",
) -> str:
    return "|".join(
        [
            "MSH",
            "^~\\&",
            _escape(application),
            _escape(facility),
            _escape(receiver),
            _escape(receiver_facility),
            _ts(),
            "",
            kind,
            control_id[:199],
            "P",
            version,
            "",
            "",
            "",
            "",
            "",
            "UNICODE UTF-8",
        ]
    )


def ack(
    message: hl7.Message | None,
    code: str,
    text: str = "",
    error_code: str = "",
    application: str = "TRAILERLINK",
    facility: str = "",
) -> str:
    """An original-mode acknowledgement (MSA-1 ``code``: AA, AE or AR) for ``message``.

    When the message could not be parsed at all, the ACK still names no control ID."""
    if message is not None:
        their_app = field(message, "MSH", 3, kind="text")
        their_fac = field(message, "MSH", 4, kind="text")
        control = field(message, "MSH", 10, kind="text")
        trigger = field(message, "MSH", 9, 2, kind="text")
        version = field(message, "MSH", 12, kind="text") or "2.5"
    else:
        their_app = their_fac = control = trigger = ""
        version = "2.5"
    segments = [
        _msh(
            application,
            facility,
            their_app,
            their_fac,
            f"ACK^{trigger}^ACK",
            uuid.uuid4().hex[:20],
            version if version in SUPPORTED_VERSIONS else "2.5",
        ),
        "|".join(["MSA", code, _escape(control), _escape(text[:80])]),
    ]
    if code != "AA":
        error = f"{error_code or APPLICATION_INTERNAL_ERROR}^{_escape(text[:80])}^HL70357"
        segments.append("|".join(["ERR", "", "", error, "E"]))
    return "\r".join(segments)


def ack_code(text: str) -> tuple[str, str]:
    """MSA-1 and MSA-3 of an acknowledgement we received."""
    message = hl7.parse(text.replace("\n", "\r").strip("\r"))
    return field(message, "MSA", 1, kind="text"), field(message, "MSA", 3, kind="text")


def adt_a08(
    *,
    control_id: str,
    application: str,
    facility: str,
    receiver: str,
    receiver_facility: str,
    patient_id: str,
    issuer: str,
    family: str,
    given: str,
    birth_date: str,
    sex: str,
    operator: str,
    corrected_at: datetime,
    correction_id: str,
    accession: str,
    sps_id: str,
    reason: str,
) -> str:
    """ADT^A08 carrying only the corrected values (empty fields mean "unchanged" in
    HL7 v2); EVN-5 names the operator, EVN-6 when; ZCR ties it to the appointment."""
    name = f"{_escape(family)}^{_escape(given)}" if (family or given) else ""
    return "\r".join(
        [
            _msh(application, facility, receiver, receiver_facility, "ADT^A08^ADT_A01", control_id),
            "|".join(["EVN", "A08", _ts(), "", "CORR", _escape(operator), _ts(corrected_at)]),
            "|".join(
                [
                    "PID",
                    "1",
                    "",
                    f"{_escape(patient_id)}^^^{_escape(issuer)}^NH",
                    "",
                    name,
                    "",
                    birth_date,
                    sex,
                ]
            ),
            "|".join(["PV1", "1", "O"]),
            "|".join(
                [
                    "ZCR",
                    _escape(correction_id),
                    _escape(accession),
                    _escape(sps_id),
                    _escape(reason),
                ]
            ),
        ]
    )


def adt_a47(
    *,
    control_id: str,
    application: str,
    facility: str,
    receiver: str,
    receiver_facility: str,
    old_id: str,
    new_id: str,
    issuer: str,
    operator: str,
    corrected_at: datetime,
) -> str:
    """ADT^A47: change of patient identifier (an NHS number corrected on the trailer)."""
    return "\r".join(
        [
            _msh(application, facility, receiver, receiver_facility, "ADT^A47^ADT_A30", control_id),
            "|".join(["EVN", "A47", _ts(), "", "CORR", _escape(operator), _ts(corrected_at)]),
            "|".join(["PID", "1", "", f"{_escape(new_id)}^^^{_escape(issuer)}^NH"]),
            "|".join(["MRG", f"{_escape(old_id)}^^^{_escape(issuer)}^NH"]),
        ]
    )


ORDER_STATUS = {"IN PROGRESS": "IP", "COMPLETED": "CM", "DISCONTINUED": "DC"}


def orm_status(
    *,
    control_id: str,
    application: str,
    facility: str,
    receiver: str,
    receiver_facility: str,
    patient_id: str,
    issuer: str,
    accession: str,
    requested_procedure_id: str,
    sps_id: str,
    status: str,
    modality: str,
    started: str,
    ended: str,
) -> str:
    """ORM^O01 status change (ORC-1 SC, ORC-5 IP/CM/DC) for a performed procedure step."""
    return "\r".join(
        [
            _msh(application, facility, receiver, receiver_facility, "ORM^O01^ORM_O01", control_id),
            "|".join(["PID", "1", "", f"{_escape(patient_id)}^^^{_escape(issuer)}^NH"]),
            "|".join(["ORC", "SC", "", _escape(accession), "", ORDER_STATUS[status]]),
            "|".join(
                ["OBR", "1", "", _escape(accession), "", "", "", started, ended]
                + [""] * 9
                + [
                    _escape(accession),
                    _escape(requested_procedure_id),
                    _escape(sps_id),
                    "",
                    "",
                    "",
                    _escape(modality),
                ]
            ),
        ]
    )
