"""Demographic corrections made on the trailer: what a valid one is (pure logic)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from trailerlink_common.logs import nhs_number_is_valid

from trailerlink_worklist.model import ScheduledStep

_NAME_PUNCTUATION = frozenset("' -.’")


def _valid_name(text: str) -> bool:
    """Letters of any script (ŵ, ł, Ó, Greek ...), spaces, hyphens, apostrophes, full
    stops; at most 64 characters (a DICOM PN component group)."""
    text = unicodedata.normalize("NFC", text)
    return 0 < len(text) <= 64 and all(c.isalpha() or c in _NAME_PUNCTUATION for c in text)


_LETTERS = "{} can only contain letters, spaces, hyphens and apostrophes"
SEXES = {"F": "Female", "M": "Male", "O": "Other"}


@dataclass(frozen=True)
class Correction:
    """Corrected values for one booked woman; '' means unchanged."""

    patient_id: str = ""
    family_name: str = ""
    given_names: str = ""
    birth_date: str = ""  # YYYYMMDD
    sex: str = ""
    reason: str = ""

    def is_empty(self) -> bool:
        return not any(
            (self.patient_id, self.family_name, self.given_names, self.birth_date, self.sex)
        )

    def apply(self, step: ScheduledStep) -> ScheduledStep:
        """``step`` with the corrected values in place."""
        family, _, rest = step.patient_name.partition("^")
        given, _, tail = rest.partition("^")
        # As typed (NFC): a correction keeps the case staff gave, like any other source.
        family = unicodedata.normalize("NFC", self.family_name) or family
        given = unicodedata.normalize("NFC", self.given_names) or given
        name = "^".join(p for p in (family, given) if p) + (f"^{tail}" if tail else "")
        return step.replace(
            patient_name=name.rstrip("^"),
            patient_id=self.patient_id or step.patient_id,
            patient_birth_date=self.birth_date or step.patient_birth_date,
            patient_sex=self.sex or step.patient_sex,
        )


def validate(form: dict[str, str], today: date) -> tuple[Correction | None, dict[str, str]]:
    """Check a staff page form. Returns the correction, or None and an error per field.

    Field names: ``nhs_number``, ``family_name``, ``given_names``, ``birth_date``
    (YYYY-MM-DD, as an HTML date input sends it), ``sex``, ``reason``.
    """
    errors: dict[str, str] = {}
    nhs = re.sub(r"[\s-]", "", form.get("nhs_number", ""))
    if nhs and not nhs_number_is_valid(nhs):
        errors["nhs_number"] = "Enter a valid 10-digit NHS number (the check digit is wrong)"
    family = form.get("family_name", "").strip()
    if family and not _valid_name(family):
        errors["family_name"] = _LETTERS.format("Family name")
    given = form.get("given_names", "").strip()
    if given and not _valid_name(given):
        errors["given_names"] = _LETTERS.format("Given names")
    birth = form.get("birth_date", "").strip()
    birth_yyyymmdd = ""
    if birth:
        try:
            born = date.fromisoformat(birth)
        except ValueError:
            errors["birth_date"] = "Enter a real date of birth, for example 1970-03-27"
        else:
            if born > today:
                errors["birth_date"] = "Date of birth must be in the past"
            elif born.year < today.year - 130:
                errors["birth_date"] = "Date of birth is too far in the past"
            else:
                birth_yyyymmdd = born.strftime("%Y%m%d")
    sex = form.get("sex", "").strip().upper()
    if sex and sex not in SEXES:
        errors["sex"] = "Choose female, male or other"
    reason = form.get("reason", "").strip()
    if not reason:
        errors["reason"] = "Say why the details are being corrected"
    elif len(reason) > 200:
        errors["reason"] = "Reason must be 200 characters or fewer"
    correction = Correction(nhs, family, given, birth_yyyymmdd, sex, reason)
    if not errors and correction.is_empty():
        errors["form"] = "Change at least one detail"
    return (None, errors) if errors else (correction, {})
