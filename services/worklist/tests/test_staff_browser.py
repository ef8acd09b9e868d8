"""The staff page in a real headless Chromium at a 768 px portrait tablet's width (issue
#18): sign-in, arrived / did not attend / undo, a correction, self-reload and sign-out.
Each test saves screenshots (paths printed and recorded as test properties) and asserts
on the rendered DOM.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from trailerlink_testing.ports import free_port
from trailerlink_testing.waiting import async_wait_until, wait_until
from trailerlink_worklist import staff as staff_module
from trailerlink_worklist.app import WorklistApp
from trailerlink_worklist.auth import hash_password
from trailerlink_worklist.model import Source, StepStatus
from trailerlink_worklist.staff import age

from .cdp import CHROMIUM, Browser
from .conftest import GREEK, IRISH, POLISH, WELSH, WELSH_2, booking, today

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")

PASSWORD = "correct horse battery"
PEOPLE = {0: WELSH, 1: WELSH_2, 2: IRISH, 3: POLISH, 4: GREEK}
SHOWN = {
    0: "Llewelyn, Siân",
    1: "Prŷs-Ffŵrn, Gwenllŷn",
    2: "Ó Súilleabháin, Aoibhínn",
    3: "Wałęsowa-Testowa, Łucja",
    4: "Παπαδοπούλου, Ελένη",
}


class _Server:
    """The staff routes served over real HTTP by uvicorn in a thread."""

    def __init__(self, web: FastAPI) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                web, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        wait_until(lambda: self.server.started, 20, "staff page listening")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture
def site(make_app, tmp_path: Path) -> Iterator[tuple[WorklistApp, str]]:  # type: ignore[no-untyped-def]
    credentials = tmp_path / "staff.txt"
    credentials.write_text(f"radiographer1:{hash_password(PASSWORD, n=2**10)}\n")
    app: WorklistApp = make_app(staff_credentials_file=credentials)
    first, last = app.worklist.window()
    steps = [
        booking(i, patient_name=name, patient_id="9990549206", patient_birth_date="19590312")
        for i, name in PEOPLE.items()
    ]
    app.worklist.replace_window(steps, Source.DICOM_MWL, first, last)
    web = FastAPI()
    app.staff.install(web)
    with _Server(web) as server:
        yield app, f"http://127.0.0.1:{server.port}"


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    tab = await Browser(tmp_path / "chromium", width=768, height=1024).start()
    try:
        yield tab
    finally:
        await tab.close()


@pytest.fixture
def shots(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, record_property
):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.getbasetemp() / "screenshots"

    async def take(tab: Browser, name: str) -> Path:
        path = await tab.screenshot(folder / f"{request.node.name}-{name}.png")
        record_property(f"screenshot_{name}", str(path))
        print(f"screenshot: {path}")
        return path

    return take


async def _signed_in(tab: Browser, url: str) -> None:
    tab.credentials = ("radiographer1", PASSWORD)
    await tab.goto(url + "/")
    assert await tab.text("#user") == "radiographer1"


async def test_signed_in_list_at_tablet_width_shows_every_name_as_meant(  # type: ignore[no-untyped-def]
    site, browser, shots
) -> None:
    _app, url = site
    await _signed_in(browser, url)
    await shots(browser, "list-768")
    names = await browser.js("[...document.querySelectorAll('td.name')].map(e => e.innerText)")
    assert names == [SHOWN[i] for i in sorted(PEOPLE)]
    assert await browser.js(
        "[...document.querySelectorAll('td.nhs')].every(e => e.innerText === '999 054 9206')"
    )
    dob = await browser.text("td.dob")
    assert dob == f"12 Mar 1959 ({age('19590312', today())})"
    # Fits the tablet: nothing scrolls sideways, and no date of birth wraps.
    assert await browser.js("document.documentElement.scrollWidth") <= 768
    tops = await browser.js("""[...document.querySelectorAll('td.dob, td.nhs')].map(td => {
        const r = document.createRange(); r.selectNodeContents(td);
        return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size; })""")
    assert set(tops) == {1}
    assert (
        await browser.js("getComputedStyle(document.querySelector('th.col-accession')).display")
        == "none"
    )


async def test_arrived_did_not_attend_and_undo(site, browser, shots) -> None:  # type: ignore[no-untyped-def]
    app, url = site
    await _signed_in(browser, url)
    key = booking(0).key

    async def press(label: str) -> None:
        await browser.click(
            f"tbody tr:nth-child(1) form:has(input[name=status][value={label}]) button"
        )

    await press("arrived")
    assert app.cache.get_step(key).status == StepStatus.ARRIVED
    assert await browser.text("tbody tr:nth-child(1) td.status") == "arrived"
    await shots(browser, "arrived")
    await press("booked")  # "Undo arrived"
    assert app.cache.get_step(key).status == StepStatus.BOOKED
    await press("did_not_attend")
    assert await browser.text("tbody tr:nth-child(1) td.status") == "did not attend"
    await shots(browser, "did-not-attend")
    await press("booked")  # "Undo did not attend"
    assert app.cache.get_step(key).status == StepStatus.BOOKED


async def test_a_correction_in_welsh_is_saved_as_typed(site, browser, shots) -> None:  # type: ignore[no-untyped-def]
    app, url = site
    await _signed_in(browser, url)
    await browser.click("tbody tr:nth-child(3) a[href$='/correct']")
    assert await browser.text("h1") == "Correct details"
    await browser.js("""(() => {
        document.querySelector('#family_name').value = 'Prŷs';
        document.querySelector('#given_names').value = 'Siân Ŵyn';
        document.querySelector('#reason').value = 'Spelling checked with her letter';
        return true; })()""")
    await shots(browser, "correction-form")
    await browser.click("form[action$='/correct'] button[type=submit]")
    assert "Correction saved" in await browser.text("main")
    assert app.cache.get_step(booking(2).key).step.patient_name == "Prŷs^Siân Ŵyn"
    names = await browser.js("[...document.querySelectorAll('td.name')].map(e => e.innerText)")
    assert "Prŷs, Siân Ŵyn" in names
    await shots(browser, "corrected")


async def test_the_list_reloads_itself_and_a_half_typed_correction_is_kept(  # type: ignore[no-untyped-def]
    site, browser, shots, monkeypatch
) -> None:
    app, url = site
    monkeypatch.setattr(staff_module, "REFRESH_SECONDS", 1)
    await _signed_in(browser, url)
    app.worklist.upsert(booking(9, patient_name="Newly^Booked"), Source.DICOM_MWL)
    await async_wait_until(lambda: _shows(browser, "Newly, Booked"), 20, "the list reloaded itself")
    await shots(browser, "reloaded")
    # The correction page does not reload: what staff typed stays.
    await browser.click("tbody tr:nth-child(1) a[href$='/correct']")
    await browser.js("document.querySelector('#reason').value = 'half typed'")
    for _ in range(3):  # three refresh intervals
        await browser.js("new Promise(r => setTimeout(r, 1000))")
    assert await browser.js("document.querySelector('#reason').value") == "half typed"
    assert await browser.js("document.querySelector('meta[http-equiv=refresh]')") is None


async def _shows(tab: Browser, name: str) -> bool:
    try:
        return name in await tab.text("table")
    except Exception:
        return False


async def test_sign_out_asks_the_next_person_to_sign_in(site, browser, shots) -> None:  # type: ignore[no-untyped-def]
    _app, url = site
    await _signed_in(browser, url)
    browser.credentials = None  # the next person has not typed anything yet
    await browser.click("header form[action='/sign-out'] button")
    assert "You are signed out" in await browser.text("main")
    await shots(browser, "signed-out")
    await browser.goto(url + "/")
    assert "Sign in with your trailer staff account" in await browser.text("main")
    assert "Llewelyn" not in await browser.text("body")
    browser.credentials = ("radiographer1", PASSWORD)
    await browser.goto(url + "/")
    assert await browser.text("#user") == "radiographer1"
