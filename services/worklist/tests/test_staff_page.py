"""The staff page over HTTP: authentication, CSRF, today's list, status buttons and the
correction form with its validation."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from trailerlink_worklist.app import WorklistApp
from trailerlink_worklist.auth import hash_password, verify_password
from trailerlink_worklist.model import Source, StepStatus

from .conftest import booking

PASSWORD = "correct horse battery"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
async def staff(make_app, tmp_path: Path) -> AsyncIterator[tuple[WorklistApp, httpx.AsyncClient]]:  # type: ignore[no-untyped-def]
    credentials = tmp_path / "staff.txt"
    credentials.write_text(f"# trailer staff\nradiographer1:{hash_password(PASSWORD, n=2**10)}\n")
    app: WorklistApp = make_app(staff_credentials_file=credentials)
    first, last = app.worklist.window()
    app.worklist.replace_window([booking(i) for i in range(3)], Source.DICOM_MWL, first, last)
    web = FastAPI()
    app.staff.install(web)
    transport = httpx.ASGITransport(app=web)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://trailer.lan", headers=basic("radiographer1", PASSWORD)
    ) as client:
        yield app, client


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found
    return found.group(1)


def test_password_hashes_verify() -> None:
    stored = hash_password("a long passphrase", n=2**10)
    assert verify_password(stored, "a long passphrase")
    assert not verify_password(stored, "a wrong passphrase")
    assert not verify_password("plain", "plain")


async def test_no_credentials_means_no_access(make_app) -> None:  # type: ignore[no-untyped-def]
    app: WorklistApp = make_app()
    web = FastAPI()
    app.staff.install(web)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=web), base_url="http://trailer.lan"
    ) as client:
        assert (await client.get("/")).status_code == 503
        assert (await client.post("/refresh")).status_code == 503


async def test_wrong_password_is_challenged(staff) -> None:  # type: ignore[no-untyped-def]
    _app, client = staff
    response = await client.get("/", headers=basic("radiographer1", "wrong"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    response = await client.get("/", headers={"Authorization": ""})
    assert response.status_code == 401


async def test_todays_list_shows_each_booking_with_status_and_link_state(staff) -> None:  # type: ignore[no-untyped-def]
    _app, client = staff
    response = await client.get("/")
    assert response.status_code == 200
    html = response.text
    assert '<html lang="en-GB">' in html and "<caption>3 appointments" in html
    for i in range(3):
        assert booking(i).accession_number in html
    assert "TEST, Alpha" in html and "999 000 0018" in html
    assert "booked" in html and "Worklist last updated from upstream" in html
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_status_buttons_need_a_valid_csrf_token(staff) -> None:  # type: ignore[no-untyped-def]
    app, client = staff
    key = booking(0).key
    url = f"/steps/{key.replace('|', '%7C')}/status"
    refused = await client.post(url, data={"status": "arrived", "csrf_token": "1.forged"})
    assert refused.status_code == 403
    assert app.cache.get_step(key).status == StepStatus.BOOKED
    token = csrf((await client.get("/")).text)
    cross_site = await client.post(
        url,
        data={"status": "arrived", "csrf_token": token},
        headers={"Origin": "http://evil.example"},
    )
    assert cross_site.status_code == 403
    done = await client.post(url, data={"status": "arrived", "csrf_token": token})
    assert done.status_code == 303
    assert app.cache.get_step(key).status == StepStatus.ARRIVED
    not_allowed = await client.post(url, data={"status": "completed", "csrf_token": token})
    assert not_allowed.status_code == 400
    dna = await client.post(url, data={"status": "did_not_attend", "csrf_token": token})
    assert dna.status_code == 303
    assert "did not attend" in (await client.get("/")).text


async def test_correction_form_shows_validation_errors(staff) -> None:  # type: ignore[no-untyped-def]
    app, client = staff
    url = f"/steps/{booking(1).key.replace('|', '%7C')}/correct"
    form = await client.get(url)
    assert form.status_code == 200 and '<label for="nhs_number">' in form.text
    response = await client.post(
        url,
        data={
            "csrf_token": csrf(form.text),
            "nhs_number": "9990000019",
            "birth_date": "2999-01-01",
            "family_name": "TEST<script>",
            "reason": "",
        },
    )
    assert response.status_code == 422
    html = response.text
    assert "There is a problem" in html
    assert "check digit is wrong" in html
    assert "Date of birth must be in the past" in html
    assert "Family name can only contain letters" in html
    assert "Say why the details are being corrected" in html
    assert "<script>" not in html  # what was typed comes back escaped
    assert 'aria-invalid="true"' in html
    assert app.cache.outbox_size() == 3  # only the three bookings' events: nothing queued


async def test_valid_correction_is_applied_and_queued(staff) -> None:  # type: ignore[no-untyped-def]
    app, client = staff
    key = booking(2).key
    url = f"/steps/{key.replace('|', '%7C')}/correct"
    token = csrf((await client.get(url)).text)
    before = app.cache.outbox_size()
    response = await client.post(
        url,
        data={
            "csrf_token": token,
            "nhs_number": "999 000 0069",
            "given_names": "Charlotte",
            "birth_date": "1958-07-21",
            "sex": "F",
            "reason": "Checked with her letter",
        },
    )
    assert response.status_code == 303
    step = app.cache.get_step(key).step
    assert (step.patient_id, step.patient_name, step.patient_birth_date) == (
        "9990000069",
        "TEST^Charlotte",
        "19580721",
    )  # as typed: never upper-cased
    assert app.cache.outbox_size() == before + 2  # the correction and WorklistChanged
    page = await client.get(response.headers["location"])
    assert "Correction saved" in page.text


async def test_refresh_asks_upstream(staff) -> None:  # type: ignore[no-untyped-def]
    app, client = staff
    asked = []
    app.staff.refresh = lambda: asked.append(True)
    token = csrf((await client.get("/")).text)
    assert (await client.post("/refresh", data={"csrf_token": token})).status_code == 303
    assert asked == [True]


# --- names, numbers and dates as staff read them (issue #18) ----------------------------
async def test_names_numbers_and_dates_as_uk_staff_read_them(staff) -> None:  # type: ignore[no-untyped-def]
    import unicodedata
    from datetime import timedelta

    from trailerlink_worklist.staff import age

    from .conftest import GREEK, IRISH, POLISH, WELSH, WELSH_2, today

    app, client = staff
    decomposed = unicodedata.normalize("NFD", WELSH)
    people = {
        10: decomposed,
        11: WELSH_2,
        12: IRISH,
        13: POLISH,
        14: GREEK,
        15: "MCCARTHY^SIÂN",
        16: "ap Dafydd^Gwenllian",
    }
    steps = [
        booking(i, patient_name=n, patient_id="9990549206", patient_birth_date="19590312")
        for i, n in people.items()
    ]
    tomorrow = booking(17, day=today() + timedelta(days=1), patient_name="Tomorrow^Test")
    first, last = app.worklist.window()
    app.worklist.replace_window([*steps, tomorrow], Source.DICOM_MWL, first, last)
    html = (await client.get("/")).text
    for shown in (
        "Llewelyn, Siân",
        "Prŷs-Ffŵrn, Gwenllŷn",
        "Ó Súilleabháin, Aoibhínn",
        "Wałęsowa-Testowa, Łucja",
        "Παπαδοπούλου, Ελένη",
        "MCCARTHY, Siân",
        "ap Dafydd, Gwenllian",
    ):
        assert shown in html
    assert decomposed not in html  # NFC on the page
    years = age("19590312", today())
    assert f'12 Mar 1959 <span class="age">({years})</span>' in html
    assert "999 054 9206" in html
    assert '<meta http-equiv="refresh"' in html
    assert "Tomorrow, Test" not in html
    later = (await client.get(f"/?day={(today() + timedelta(days=1)).isoformat()}")).text
    assert "Tomorrow, Test" in later and "Llewelyn" not in later


async def test_sign_out_makes_the_browser_forget_the_credentials(staff) -> None:  # type: ignore[no-untyped-def]
    _app, client = staff
    token = csrf((await client.get("/")).text)
    assert (await client.post("/sign-out", data={"csrf_token": "1.forged"})).status_code == 403
    response = await client.post("/sign-out", data={"csrf_token": token})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert "signed out" in response.text


def test_corrections_take_names_in_any_script_as_typed() -> None:
    from trailerlink_worklist.corrections import validate

    from .conftest import today

    correction, errors = validate(
        {"family_name": "Prŷs-Ffŵrn", "given_names": "Łucja Ó", "reason": "spelling"}, today()
    )
    assert errors == {} and correction is not None
    step = correction.apply(booking(1))
    assert step.patient_name == "Prŷs-Ffŵrn^Łucja Ó"
