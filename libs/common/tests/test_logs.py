"""The log redaction guard: patient identifiers never reach a log line."""

from __future__ import annotations

import io
import json
import logging

import pytest
from trailerlink_common.logs import (
    REDACTED,
    JsonFormatter,
    nhs_number_is_valid,
    redact,
    redact_text,
)

# Synthetic NHS numbers from the 999 test range (valid check digits).
VALID_NHS = "9990000026"


@pytest.fixture
def log_stream() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("redaction-test")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_nhs_check_digit() -> None:
    assert nhs_number_is_valid(VALID_NHS)
    assert not nhs_number_is_valid("9990000027")
    assert not nhs_number_is_valid("123")


def test_patient_name_and_nhs_number_are_dropped_from_message(log_stream) -> None:
    logger, stream = log_stream
    logger.info("stored image for SMITH^JANE^MARY nhs %s spaced 999 000 0026", VALID_NHS)
    line = json.loads(stream.getvalue())
    assert "SMITH" not in line["msg"] and "JANE" not in line["msg"]
    assert VALID_NHS not in line["msg"] and "999 000 0026" not in line["msg"]
    assert line["msg"].count(REDACTED) == 3


def test_patient_fields_in_extra_are_dropped(log_stream) -> None:
    logger, stream = log_stream
    logger.warning(
        "correction queued",
        extra={
            "patient_name": "Jane Smith",
            "PatientBirthDate": "19600101",
            "nested": {"nhs_number": VALID_NHS},
            "sop_instance_uid": "1.2.826.0.1.3680043.1234567890",
        },
    )
    line = json.loads(stream.getvalue())
    assert line["patient_name"] == REDACTED
    assert line["PatientBirthDate"] == REDACTED
    assert line["nested"]["nhs_number"] == REDACTED
    # UIDs are not patient data and must survive, even with ten-digit components.
    assert line["sop_instance_uid"] == "1.2.826.0.1.3680043.1234567890"


def test_exception_text_is_redacted(log_stream) -> None:
    logger, stream = log_stream
    try:
        raise ValueError("bad dataset for DOE^ANNE")
    except ValueError:
        logger.exception("store failed")
    line = json.loads(stream.getvalue())
    assert "DOE" not in line["exc"]
    assert line["exc_type"] == "ValueError"


def test_printed_dicom_patient_elements_are_dropped() -> None:
    dump = "(0008,0060) Modality CS: 'MG'\n(0010,0030) Patient's Birth Date DA: '19600101'"
    out = redact_text(dump)
    assert "19600101" not in out
    assert "Modality" in out


def test_ordinary_numbers_survive() -> None:
    # Sizes, counts and offsets are not NHS numbers unless they pass the check digit.
    assert (
        redact_text("wrote 1234567890 bytes at offset 42") == "wrote 1234567890 bytes at offset 42"
    )
    assert redact({"size": 1234567890}) == {"size": 1234567890}
