"""HL7 names reach the cache and the modality as the sender meant them (issue #18): MSH-18
honoured, every escape decoded, nothing split into DICOM values, case kept; and bookings
outside the worklist window are refused with a reason rather than silently dropped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import hl7
import pytest
from pydicom.multival import MultiValue
from trailerlink_testing import hl7 as hl7client
from trailerlink_testing.dcmtk import findscu
from trailerlink_worklist import metrics
from trailerlink_worklist.app import WorklistApp
from trailerlink_worklist.upstream.hl7_listener import Hl7Listener

from .conftest import GERMAN, GREEK, IRISH, POLISH, WELSH, WELSH_2, hl7_listening, today, ymd
from .test_hl7_listener import PID, send, siu

PID_NAME = "TEST^ALPHA^MARY"


@pytest.fixture
async def hl7_app(make_app) -> AsyncIterator[tuple[WorklistApp, Hl7Listener]]:  # type: ignore[no-untyped-def]
    async with hl7_listening(make_app(upstream="hl7")) as running:
        yield running


def with_name(name_field: str, appointment: str, charset: str = "UNICODE UTF-8") -> str:
    """A SIU^S12 whose PID-5 is ``name_field`` (HL7 text, escapes and all)."""
    return siu("S12", appointment, pid=PID.replace(PID_NAME, name_field)).replace(
        "UNICODE UTF-8", charset
    )


def cached_name(app, appointment: str) -> str:  # type: ignore[no-untyped-def]
    return app.cache.get_step(f"{appointment}|{appointment}").step.patient_name


def msa(ack: str) -> tuple[str, str]:
    message = hl7.parse(ack.replace("\n", "\r"))
    return str(message.extract_field("MSA", 1, 1, 1, 1)), str(
        message.extract_field("MSA", 1, 3, 1, 1)
    )


@pytest.mark.parametrize(
    ("name_field", "meant"),
    [
        ("CADWALADR\\T\\PRICE^Siân", "CADWALADR&PRICE^Siân"),
        ("Llewelyn^Siân", WELSH),
        ("Prŷs-Ffŵrn^Gwenllŷn", WELSH_2),
        ("\\H\\Ó Súilleabháin\\N\\^Aoibhínn", IRISH),
        ("Gr\\XC3BC\\nwald-Testerin^J\\XC3BC\\lie", GERMAN),
        ("Wałęsowa-Testowa^Łucja", POLISH),
        ("O\\XE28099\\Neill^Ciara", "O\u2019Neill^Ciara"),
        ("Smith\\F\\Jones^Ann", "Smith|Jones^Ann"),
        ("Smith\\R\\Jones^Ann", "Smith~Jones^Ann"),
        ("Evans^Mary\\.br\\Ann", "Evans^Mary Ann"),
        ("Evans^Mary\\X09\\Ann", "Evans^Mary Ann"),
        ("van&der Berg^Anna", "van^Anna"),  # FN.1: the surname; later subcomponents are parts
        ("Llewelyn^Siân^^^Mrs", "Llewelyn^Siân^^Mrs"),  # XPN prefix -> PN prefix
    ],
)
async def test_utf8_names_and_escapes_are_stored_as_meant(
    hl7_app,
    name_field: str,
    meant: str,
) -> None:
    app, listening = hl7_app
    ack = await send(listening, with_name(name_field, "APPT1"))
    assert hl7client.ack_code(ack) == "AA"
    assert cached_name(app, "APPT1") == meant


@pytest.mark.parametrize(
    ("charset", "codec", "name"),
    [
        ("8859/1", "latin-1", IRISH),
        ("8859/1", "latin-1", GERMAN),
        ("8859/2", "iso8859-2", POLISH),
        ("8859/7", "iso8859-7", GREEK),
        ("8859/15", "iso8859-15", GERMAN),
        ("UNICODE UTF-8~8859/1", "utf-8", WELSH_2),  # first repetition: the message's set
        ("UNICODE", "utf-8", WELSH),
    ],
)
async def test_msh18_variants_decode_the_message(
    hl7_app,
    charset: str,
    codec: str,
    name: str,
) -> None:
    app, listening = hl7_app
    message = with_name(name, "APPT2", charset)
    assert hl7client.ack_code(await send(listening, message.encode(codec))) == "AA"
    assert cached_name(app, "APPT2") == name


async def test_latin1_hex_escape_is_decoded_in_the_messages_set(hl7_app) -> None:
    app, listening = hl7_app
    message = with_name("Llewelyn^Si\\XE2\\n", "APPT3", "8859/1")
    assert hl7client.ack_code(await send(listening, message.encode("latin-1"))) == "AA"
    assert cached_name(app, "APPT3") == WELSH


@pytest.mark.parametrize(
    ("body", "codec", "fallback"), [(WELSH_2, "utf-8", "utf-8"), (IRISH, "latin-1", "latin-1")]
)
async def test_undeclared_charset_follows_the_auto_rule_and_is_counted(  # type: ignore[no-untyped-def]
    hl7_app, body: str, codec: str, fallback: str
) -> None:
    app, listening = hl7_app
    before = metrics.CHARSET_FALLBACKS.labels("hl7", fallback)._value.get()
    message = with_name(body, "APPT4", "")
    assert hl7client.ack_code(await send(listening, message.encode(codec))) == "AA"
    assert cached_name(app, "APPT4") == body
    assert metrics.CHARSET_FALLBACKS.labels("hl7", fallback)._value.get() == before + 1


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [
        (with_name("CADWALADR\\E\\PRICE^Siân", "BAD1"), "AE", "backslash"),
        (with_name("Smith\\S\\Jones^Ann", "BAD2"), "AE", "backslash, ^ or ="),
        (with_name("Smith^Ann\\", "BAD3"), "AE", "unterminated"),
        (with_name("Smith^\\C2842\\Ann", "BAD4"), "AE", "character set switching"),
        (with_name("Smith^\\Q\\Ann", "BAD5"), "AE", "unknown escape"),
        (with_name("Smith^\\XC3\\Ann", "BAD6"), "AE", "\\X escape"),
        (with_name("Llewelyn^Siân", "BAD7", "EBCDIC"), "AR", "unsupported character set"),
    ],
)
async def test_names_dicom_cannot_hold_are_refused_never_split(  # type: ignore[no-untyped-def]
    hl7_app, message: str, code: str, reason: str
) -> None:
    app, listening = hl7_app
    ack = await send(listening, message)
    got, text = msa(ack)
    assert got == code
    assert reason in text
    assert app.cache.steps() == []


async def test_bytes_not_in_the_declared_set_are_rejected(hl7_app) -> None:
    app, listening = hl7_app
    message = with_name(IRISH, "BAD8").encode("latin-1")  # says UTF-8, is Latin-1
    assert hl7client.ack_code(await send(listening, message)) == "AR"
    assert app.cache.steps() == []


async def test_hl7_names_reach_a_utf8_modality_unsplit(hl7_app) -> None:
    app, listening = hl7_app
    app.scp.start()
    names = {
        "APPT10": ("CADWALADR\\T\\PRICE^Siân", "CADWALADR&PRICE^Siân"),
        "APPT11": (WELSH_2, WELSH_2),
        "APPT12": (POLISH, POLISH),
    }
    for appointment, (sent, _meant) in names.items():
        assert hl7client.ack_code(await send(listening, with_name(sent, appointment))) == "AA"
    result = await asyncio.to_thread(
        findscu,
        "127.0.0.1",
        app.scp.port,
        "TRAILERLINK_MWL",
        ["SpecificCharacterSet=ISO_IR 192", "AccessionNumber", "PatientName"],
    )
    got = {str(r.AccessionNumber): r.PatientName for r in result.responses}
    assert {a: str(n) for a, n in got.items()} == {a: m for a, (_s, m) in names.items()}
    assert not any(isinstance(value, MultiValue) for value in got.values())  # never split


@pytest.mark.parametrize(("offset", "when"), [(-1, "before"), (15, "after")])
async def test_bookings_outside_the_window_are_refused_naming_it(  # type: ignore[no-untyped-def]
    hl7_app, offset: int, when: str
) -> None:
    app, listening = hl7_app
    day = ymd(today() + timedelta(days=offset))
    ack = await send(listening, siu("S12", "OUTSIDE", day=day))
    code, text = msa(ack)
    first, last = app.worklist.window()
    assert code == "AE"
    assert text == f"start {day} {when} worklist window {first}-{last}; not booked"
    assert app.cache.steps() == []
