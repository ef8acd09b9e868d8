"""Scanning logs for patient data: the identifying values of a clinic day's bookings
(names, NHS numbers, birth dates) and which of them appear in which log file."""

from __future__ import annotations

from pathlib import Path

from trailerlink_testing.stack.clinic import Booking


def scan_logs_for(paths: list[Path], secrets: list[str]) -> dict[str, list[str]]:
    """Which ``secrets`` appear in which log file (empty dict: none)."""
    found: dict[str, list[str]] = {}
    for path in paths:
        text = path.read_text(errors="replace")
        hits = [s for s in secrets if s and s in text]
        if hits:
            found[str(path)] = hits
    return found


def booking_secrets(bookings: list[Booking]) -> list[str]:
    """The patient-identifying values of ``bookings`` (names, NHS numbers, birth dates)."""
    out: list[str] = []
    for b in bookings:
        _family, _, given = b.patient_name.partition("^")
        out += [b.patient_name, given, b.patient_id, b.birth_date]
    return out
