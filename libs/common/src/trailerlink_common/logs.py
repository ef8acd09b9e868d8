"""Structured JSON logs with a guard that keeps patient identifiers out of them.

Every log line is one JSON object on stderr: time, level, service, logger, message
and any ``extra`` fields; a line logged inside a span also carries its ``trace_id`` and
``span_id``. Before a line is written, :func:`redact` replaces anything
that looks like patient data:

* values of fields whose name says they hold patient data (``patient_name``,
  ``PatientBirthDate``, ``nhs_number``, ...),
* DICOM person names (``FAMILY^GIVEN``),
* NHS numbers: ten digits passing the NHS modulus-11 check, or spaced ``ddd ddd dddd``,
* printed DICOM elements of the Patient group (``(0010,xxxx)``), e.g. a dataset's repr.

The guard is a safety net, not a licence: code must still log UIDs and counts only.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from trailerlink_common.tracing import log_ids

REDACTED = "[REDACTED]"

# Field names (normalised: lower case, no separators) whose values are patient data.
_PATIENT_FIELD_NAMES = frozenset(
    {
        "patientname",
        "patientsname",
        "patientid",
        "patientbirthdate",
        "patientsbirthdate",
        "birthdate",
        "dateofbirth",
        "dob",
        "nhsnumber",
        "nhsno",
        "familyname",
        "givenname",
        "givennames",
        "otherpatientids",
        "otherpatientnames",
        "patientaddress",
        "patientsaddress",
        "patientmothersbirthname",
        "patienttelephonenumbers",
    }
)

# A person name in DICOM PN form: letters, then "^", then a letter or "^".
_PERSON_NAME = re.compile(r"[A-Za-z'\-]+\^[A-Za-z'\-^ .]*")
# Ten digits, optionally grouped 3-3-4, not part of a longer number or a dotted UID.
_TEN_DIGITS = re.compile(r"(?<![\d.])(\d{3})([ -]?)(\d{3})\2(\d{4})(?![\d.])")
# A printed element of the Patient group, e.g. "(0010,0010) Patient's Name  PN: ...".
_PATIENT_ELEMENT = re.compile(r"\(0010,\s*[0-9A-Fa-f]{4}\)[^\n]*")


def nhs_number_is_valid(digits: str) -> bool:
    """True when ``digits`` (10 digits) passes the NHS number modulus-11 check."""
    if len(digits) != 10 or not digits.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def _redact_ten_digits(match: re.Match[str]) -> str:
    digits = match.group(1) + match.group(3) + match.group(4)
    spaced = match.group(2) != ""
    return REDACTED if spaced or nhs_number_is_valid(digits) else match.group(0)


def redact_text(text: str) -> str:
    """Replace patient-data-shaped substrings of ``text`` with ``[REDACTED]``."""
    text = _PATIENT_ELEMENT.sub(REDACTED, text)
    text = _PERSON_NAME.sub(REDACTED, text)
    return _TEN_DIGITS.sub(_redact_ten_digits, text)


def _is_patient_field(name: str) -> bool:
    return re.sub(r"[^a-z]", "", name.lower()) in _PATIENT_FIELD_NAMES


def redact(value: Any, field_name: str = "") -> Any:
    """Return ``value`` with patient data replaced, recursing into dicts and lists."""
    if field_name and _is_patient_field(field_name):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [redact(v) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    # Anything else (a pydicom Dataset, an exception...) is logged by its redacted text.
    return redact_text(str(value))


# LogRecord attributes that are not user "extra" fields.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON, redacted."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                line[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
            line["exc"] = "".join(traceback.format_exception(*record.exc_info))
        # Redact everything except the fixed envelope fields.
        envelope = {k: line.pop(k) for k in ("ts", "level", "service", "logger")}
        # The trace this line belongs to, if any (hex ids: kept out of the redaction,
        # whose ten-digit rule could eat a run of digits inside one).
        envelope.update(log_ids())
        return json.dumps({**envelope, **redact(line)}, default=str, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every logger's output, as redacted JSON lines, to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that log whole datasets, PDUs or a line per C-FIND answer at INFO or
    # DEBUG: only their warnings reach our logs (our own code logs each outcome once).
    for noisy in ("pynetdicom", "aiokafka", "kafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))
