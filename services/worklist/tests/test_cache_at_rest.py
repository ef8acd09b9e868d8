"""The cache's patient data is encrypted at rest (issue #18 item 6).

The SQLite file (and its WAL) is read raw and must not contain a synthetic woman's name,
NHS number or birth date; a cache from before encryption is encrypted in place on start,
all or nothing; a wrong or missing key stops the service at start with one line naming
the setting; a value moved to another row is refused. Matching over the encrypted cache
is what the rest of the suite (findscu against our SCP) already exercises.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from trailerlink_crypto.atrest import SpoolKey
from trailerlink_events import messages as m
from trailerlink_events import topics
from trailerlink_testing.procs import console_script
from trailerlink_worklist import atrest
from trailerlink_worklist.app import WorklistApp
from trailerlink_worklist.atrest import CacheKeyError, FieldCipher, IntegrityError
from trailerlink_worklist.cache import _SCHEMA, KEY_ID_META, Cache
from trailerlink_worklist.corrections import Correction
from trailerlink_worklist.matching import compile_query
from trailerlink_worklist.model import ScheduledStep, Source, StepStatus

from .conftest import (
    BIRTH_DATES,
    NAMES,
    NHS_NUMBERS,
    SITE,
    STATION,
    UNICODE_NAMES,
    WELSH,
    booking,
    key_file,
    settings_for,
    today,
    ymd,
)
from .test_mpps import _uid, completion, create_attrs

CORRECTED_FAMILY = "Testcorrected"
CORRECTED_NHS = "9990000093"
CORRECTED_BIRTH = "19610704"


def _bookings() -> list[ScheduledStep]:
    steps = [booking(i) for i in range(len(NAMES))]
    steps += [
        booking(len(NAMES) + i, patient_name=name, patient_id=NHS_NUMBERS[i])
        for i, name in enumerate(UNICODE_NAMES)
    ]
    return steps


def _needles() -> list[bytes]:
    """Every form in which a synthetic woman's details could sit in the file."""
    texts = {
        *NAMES,
        *NHS_NUMBERS,
        *BIRTH_DATES,
        *UNICODE_NAMES,
        CORRECTED_FAMILY,
        CORRECTED_FAMILY.upper(),
        CORRECTED_NHS,
        CORRECTED_BIRTH,
    }
    for name in (*NAMES, *UNICODE_NAMES):
        texts.update(part for part in name.split("^") if len(part) >= 4 and part != "TEST")
    found = set()
    for text in texts:
        found.add(text.encode("utf-8"))
        # JSON escapes non-ASCII when asked to, and a Dataset's JSON does so by default.
        found.add(json.dumps(text).strip('"').encode("ascii"))
        # A 10-digit NHS number is stored as the digits; also as the page shows it.
        if text.isdigit() and len(text) == 10:
            found.add(f"{text[:3]} {text[3:6]} {text[6:]}".encode())
    return sorted(found)


def _raw(path: Path) -> bytes:
    """The cache file, its WAL and shared memory file, byte for byte."""
    return b"".join(
        p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


def _leaks(path: Path) -> list[int]:
    """Indices (into _needles) found in the file: never the values themselves, so a
    failure does not print patient data (synthetic or not)."""
    raw = _raw(path)
    return [i for i, needle in enumerate(_needles()) if needle in raw]


def _fill(app: WorklistApp) -> list[ScheduledStep]:
    """Steps, an MPPS, a correction and their events: every table with patient data."""
    steps = _bookings()
    first, last = app.worklist.window()
    app.worklist.replace_window(steps, Source.DICOM_MWL, first, last)
    attrs = create_attrs(0)
    attrs.PatientBirthDate = BIRTH_DATES[0]
    uid = _uid()
    app.mpps.create(uid, attrs)
    app.mpps.update(uid, completion()[0])
    app.worklist.correct(
        steps[1].key,
        Correction(
            patient_id=CORRECTED_NHS,
            family_name=CORRECTED_FAMILY,
            birth_date=CORRECTED_BIRTH,
            reason="typo at booking",
        ),
        "radiographer1",
    )
    return steps


def _cfind_names(cache: Cache, pattern: str) -> list[str]:
    ds = Dataset()
    ds.PatientName = pattern
    ds.PatientID = ""
    query = compile_query(ds)
    return sorted(str(r.dataset.PatientName) for r in cache.snapshot() if query.matches(r))


def test_sqlite_file_holds_no_name_nhs_number_or_birth_date(make_app) -> None:  # type: ignore[no-untyped-def]
    app: WorklistApp = make_app()
    steps = _fill(app)
    path = app.cache.path
    assert app.cache.outbox_size() > 0

    assert _leaks(path) == [], "patient data in the cache file while it is open"
    # Still read and matched as before.
    assert _cfind_names(app.cache, "Llewelyn*") == [WELSH]
    assert _cfind_names(app.cache, "TEST^ALPHA") == ["TEST^ALPHA"]
    assert {c.step.key for c in app.cache.steps()} == {s.key for s in steps}
    assert app.cache.get_step(steps[1].key).step.patient_id == CORRECTED_NHS  # type: ignore[union-attr]
    assert any(i.topic == topics.DEMOGRAPHICS_CORRECTION for i in app.cache.outbox_batch())

    app.cache.close()
    assert _leaks(path) == [], "patient data in the cache file after close"


def test_c_find_matches_over_the_encrypted_cache_after_reopening(tmp_path: Path) -> None:
    app = WorklistApp(settings_for(tmp_path / "w"))
    steps = _fill(app)
    app.cache.close()
    again = WorklistApp(settings_for(tmp_path / "w"))
    try:
        assert len(_cfind_names(again.cache, "*")) == len(steps)
        assert _cfind_names(again.cache, "ó súilleabháin*") == ["Ó Súilleabháin^Aoibhínn"]
        # The correction is still in force over a later upstream copy of the step.
        first, last = again.worklist.window()
        again.worklist.replace_window(steps, Source.DICOM_MWL, first, last)
        corrected = again.cache.get_step(steps[1].key)
        assert corrected is not None and corrected.step.patient_id == CORRECTED_NHS
    finally:
        again.cache.close()


# --- a cache written before encryption ------------------------------------------------------
def _plaintext_cache(path: Path, steps: list[ScheduledStep]) -> dict[str, object]:
    """A cache exactly as the worklist wrote it before encryption (same schema, JSON and
    protobuf in the clear); returns what was put in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(_SCHEMA)
    now = time.time()
    for step in steps:
        conn.execute(
            "INSERT INTO steps (key, source, scheduled_date, status, data, content_hash,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                step.key,
                Source.DICOM_MWL.value,
                step.scheduled_date,
                StepStatus.BOOKED.value,
                step.as_json(),
                hashlib.sha256(step.as_json().encode()).hexdigest(),
                now,
            ),
        )
    attrs = create_attrs(2)
    attrs.PatientBirthDate = BIRTH_DATES[2]
    mpps_uid = _uid()
    text = json.dumps(attrs.to_json_dict())
    conn.execute(
        "INSERT INTO mpps (uid, status, step_key, scheduled_date, create_attrs, final_attrs,"
        " upstream_state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'none', ?, ?)",
        (mpps_uid, "IN PROGRESS", steps[2].key, steps[2].scheduled_date, text, text, now, now),
    )
    correction = Correction(
        family_name=CORRECTED_FAMILY,
        patient_id=CORRECTED_NHS,
        birth_date=CORRECTED_BIRTH,
        reason="typo",
    )
    conn.execute(
        "INSERT INTO corrections (correction_id, step_key, scheduled_date, fields,"
        " corrected_by, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (
            "c-1",
            steps[3].key,
            steps[3].scheduled_date,
            json.dumps(correction.__dict__),
            "radiographer1",
            now,
        ),
    )
    event = m.DemographicsCorrection(
        correction_id="c-1",
        patient_id=NHS_NUMBERS[3],
        corrected_patient_id=CORRECTED_NHS,
        corrected_family_name=CORRECTED_FAMILY.upper(),
        corrected_birth_date=CORRECTED_BIRTH,
    )
    payload = event.SerializeToString()
    conn.execute(
        "INSERT INTO outbox (topic, key, payload, created_at) VALUES (?, ?, ?, ?)",
        (topics.DEMOGRAPHICS_CORRECTION, steps[3].accession_number, payload, now),
    )
    conn.close()
    return {"mpps_uid": mpps_uid, "payload": payload}


def _cipher(path: Path) -> FieldCipher:
    return FieldCipher(SpoolKey.from_file(path))


def test_a_plaintext_cache_is_encrypted_in_place_on_start(tmp_path: Path) -> None:
    steps = _bookings()
    path = tmp_path / "worklist" / "worklist.sqlite"
    put = _plaintext_cache(path, steps)
    assert _leaks(path), "the plaintext cache should show the data (test setup)"

    app = WorklistApp(settings_for(tmp_path, cache_path=path))
    try:
        assert _leaks(path) == [], "plaintext left in the cache file after migration"
        assert app.cache.get_meta(KEY_ID_META) == app.cache.cipher.key_id
        assert {c.step.key for c in app.cache.steps()} == {s.key for s in steps}
        assert _cfind_names(app.cache, "TEST^BRAVO") == ["TEST^BRAVO"]
        record = app.mpps.get(str(put["mpps_uid"]))
        assert record is not None and str(record.attrs.PatientName) == NAMES[2]
        (item,) = app.cache.outbox_batch()
        assert item.payload == put["payload"]
        # The migrated correction still applies when upstream sends the step again.
        first, last = app.worklist.window()
        app.worklist.replace_window(steps, Source.DICOM_MWL, first, last)
        corrected = app.cache.get_step(steps[3].key)
        assert corrected is not None and corrected.step.patient_id == CORRECTED_NHS
        assert corrected.step.patient_name.startswith(CORRECTED_FAMILY + "^")
    finally:
        app.cache.close()
    assert _leaks(path) == []


def test_migration_is_one_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    steps = _bookings()
    path = tmp_path / "worklist.sqlite"
    _plaintext_cache(path, steps)
    cipher = _cipher(key_file(tmp_path))
    sealed = 0
    seal = cipher.seal

    def failing_seal(field: str, row: tuple[str, ...], plaintext: bytes) -> bytes:
        nonlocal sealed
        sealed += 1
        if field == "outbox.payload":  # the last table: everything before it is done
            raise OSError("disk gone")
        return seal(field, row, plaintext)

    monkeypatch.setattr(cipher, "seal", failing_seal)
    with pytest.raises(OSError, match="disk gone"):
        Cache(path, cipher)
    assert sealed > len(steps)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM steps WHERE typeof(data) = 'text'").fetchone()[
            0
        ] == len(steps)
        assert (
            conn.execute("SELECT COUNT(*) FROM meta WHERE name = ?", (KEY_ID_META,)).fetchone()[0]
            == 0
        )
    finally:
        conn.close()

    monkeypatch.undo()
    cache = Cache(path, cipher)
    try:
        assert len(cache.steps()) == len(steps)
    finally:
        cache.close()
    assert _leaks(path) == []


# --- keys --------------------------------------------------------------------------------
def _forbidden(text: str) -> list[str]:
    return [n for n in (*NAMES, *NHS_NUMBERS, *BIRTH_DATES, *UNICODE_NAMES) if n in text]


def test_a_wrong_key_is_refused_at_start_without_patient_data(tmp_path: Path) -> None:
    app = WorklistApp(settings_for(tmp_path / "w"))
    _fill(app)
    app.cache.close()
    other = tmp_path / "other.key"
    SpoolKey.generate().write_file(other)

    with pytest.raises(CacheKeyError) as refused:
        WorklistApp(settings_for(tmp_path / "w", worklist_key_file=other))
    message = str(refused.value)
    assert "TRAILERLINK_WORKLIST_KEY_FILE" in message and "encrypted with key" in message
    assert _forbidden(message) == []

    # The service itself: one line on stderr, exit 2, no traceback, no patient data.
    env = {
        "TRAILERLINK_DATA_DIR": str(tmp_path / "w"),
        "TRAILERLINK_WORKLIST_KEY_FILE": str(other),
        "TRAILERLINK_SITE_CODE": SITE,
        "TRAILERLINK_STATION_AE_TITLES": STATION,
        "TRAILERLINK_UPSTREAM": "none",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [console_script("trailerlink-worklist")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "TRAILERLINK_WORKLIST_KEY_FILE" in done.stderr
    assert _forbidden(done.stdout + done.stderr) == []
    # Nothing was changed by the refused start: the right key still opens the cache.
    again = WorklistApp(settings_for(tmp_path / "w"))
    try:
        assert len(again.cache.steps()) == len(_bookings())
    finally:
        again.cache.close()


def test_a_missing_or_malformed_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CacheKeyError, match="TRAILERLINK_WORKLIST_KEY_FILE: cannot read"):
        atrest.load_key(tmp_path / "absent.key")
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    with pytest.raises(CacheKeyError, match="does not hold a 32-byte key"):
        WorklistApp(settings_for(tmp_path / "w", worklist_key_file=bad))


def test_a_value_moved_to_another_row_is_refused(make_app) -> None:  # type: ignore[no-untyped-def]
    app: WorklistApp = make_app()
    steps = _fill(app)
    a, b = steps[0].key, steps[2].key
    with app.cache.transaction() as conn:
        (data_a,), (data_b,) = (
            conn.execute("SELECT data FROM steps WHERE key = ?", (k,)).fetchone() for k in (a, b)
        )
        conn.execute("UPDATE steps SET data = ? WHERE key = ?", (data_b, a))
        conn.execute("UPDATE steps SET data = ? WHERE key = ?", (data_a, b))
        # A correction re-pointed at another woman's booking.
        conn.execute("UPDATE corrections SET step_key = ?", (a,))
    with pytest.raises(IntegrityError) as refused:
        app.cache.get_step(a)
    assert _forbidden(str(refused.value)) == []
    with pytest.raises(IntegrityError):
        app.worklist._overlay(steps[0])


def test_scheduled_dates_and_keys_stay_queryable(make_app) -> None:  # type: ignore[no-untyped-def]
    """What stays in the clear is what rows are found by: no patient data in it."""
    app: WorklistApp = make_app()
    _fill(app)
    conn = sqlite3.connect(app.cache.path)
    try:
        clear = conn.execute(
            "SELECT key, scheduled_date, status, content_hash FROM steps"
        ).fetchall()
    finally:
        conn.close()
    assert {row[1] for row in clear} == {ymd(today())}
    assert _forbidden(repr(clear)) == []
