"""Upstream adapter 2: HL7 v2 over MLLP, with python-hl7's MLLP client as the Trust's
integration engine. Correct ACK/NACK; a refused message changes nothing."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from trailerlink_testing import hl7 as hl7client
from trailerlink_testing.dcmtk import findscu
from trailerlink_worklist.app import WorklistApp
from trailerlink_worklist.model import StepStatus
from trailerlink_worklist.upstream.hl7_listener import Hl7Listener

from .conftest import SITE, hl7_listening, today, ymd

PID = "PID|1||9990000018^^^NHS^NH~LOCAL123^^^TRUST^MR||TEST^ALPHA^MARY||19700101|F"


def msh(
    kind: str, control: str | None = None, version: str = "2.5", charset: str = "UNICODE UTF-8"
) -> str:
    control = control or uuid.uuid4().hex[:16]
    return (
        f"MSH|^~\\&|NBSS|SCREENING|TRAILERLINK|TRAILER|20260101120000||{kind}|{control}"
        f"|P|{version}||||||{charset}"
    )


def siu(
    trigger: str,
    appointment: str = "APPT001",
    *,
    day: str | None = None,
    location: str = SITE,
    pid: str = PID,
    control: str | None = None,
) -> str:
    day = day or ymd(today())
    return "\r".join(
        [
            msh(f"SIU^{trigger}^SIU_S12", control),
            f"SCH|PLACER1|{appointment}|||||Screening|||^^^{day}1030",
            pid,
            "PV1|1|O|||||||||||||||||V123",
            f"AIS|1||MGSCR^Screening mammography|{day}103000",
            f"AIL|1||{location}^MOBILE^^TRUST",
        ]
    )


def orm(
    control_code: str, accession: str = "ORD001", *, day: str | None = None, location: str = SITE
) -> str:
    day = day or ymd(today())
    obr = (
        ["OBR", "1", "", accession, "MGSCR^Screening mammography"]
        + [""] * 13
        + [accession, "RP-ORD001", "SPS-ORD001", "", "", "", "MG"]
    )
    return "\r".join(
        [
            msh("ORM^O01^ORM_O01"),
            PID.replace("TEST^ALPHA^MARY", "TEST^BRAVO"),
            f"PV1|1|O|{location}^MOBILE",
            f"ORC|{control_code}||{accession}",
            "|".join(obr),
            f"TQ1|1||||||{day}111500",
        ]
    )


@pytest.fixture
async def listener(make_app) -> AsyncIterator[tuple[WorklistApp, Hl7Listener]]:  # type: ignore[no-untyped-def]
    async with hl7_listening(make_app(upstream="hl7")) as running:
        yield running


async def send(listener: Hl7Listener, message: str | bytes) -> str:
    return await asyncio.to_thread(hl7client.send, "127.0.0.1", listener.port, message)


async def test_siu_booking_modification_and_cancellation(listener) -> None:  # type: ignore[no-untyped-def]
    app, hl7 = listener
    ack = await send(hl7, siu("S12"))
    assert hl7client.ack_code(ack) == "AA"
    cached = app.cache.get_step("APPT001|APPT001")
    assert cached is not None and cached.status == StepStatus.BOOKED
    step = cached.step
    assert (step.patient_id, step.patient_name, step.scheduled_time) == (
        "9990000018",
        "TEST^ALPHA^MARY",
        "103000",
    )
    assert step.scheduled_station_ae_title == "MGTRAILER1" and step.modality == "MG"
    assert step.study_instance_uid.startswith("2.25.")

    assert hl7client.ack_code(await send(hl7, siu("S14").replace("1030", "1100"))) == "AA"
    assert app.cache.get_step("APPT001|APPT001").step.scheduled_time == "110000"

    assert hl7client.ack_code(await send(hl7, siu("S15"))) == "AA"
    assert app.cache.get_step("APPT001|APPT001") is None


async def test_cancellation_disappears_from_the_next_cfind(listener) -> None:  # type: ignore[no-untyped-def]
    app, hl7 = listener
    app.scp.start()
    await send(hl7, siu("S12", "APPT777"))
    keys = ["AccessionNumber=APPT777", "PatientName"]
    found = await asyncio.to_thread(findscu, "127.0.0.1", app.scp.port, "TRAILERLINK_MWL", keys)
    assert len(found.responses) == 1
    await send(hl7, siu("S15", "APPT777"))
    gone = await asyncio.to_thread(findscu, "127.0.0.1", app.scp.port, "TRAILERLINK_MWL", keys)
    assert gone.responses == [] and gone.final_status == "Success"


async def test_orm_new_and_cancel(listener) -> None:  # type: ignore[no-untyped-def]
    app, hl7 = listener
    assert hl7client.ack_code(await send(hl7, orm("NW"))) == "AA"
    step = app.cache.get_step("ORD001|SPS-ORD001").step
    assert (step.requested_procedure_id, step.modality, step.scheduled_time) == (
        "RP-ORD001",
        "MG",
        "111500",
    )
    assert step.patient_name == "TEST^BRAVO"
    assert hl7client.ack_code(await send(hl7, orm("CA"))) == "AA"
    assert app.cache.get_step("ORD001|SPS-ORD001") is None


async def test_adt_updates_demographics_of_her_steps(listener) -> None:  # type: ignore[no-untyped-def]
    app, hl7 = listener
    await send(hl7, siu("S12", "APPT100"))
    adt = "\r".join(
        [
            msh("ADT^A08^ADT_A01"),
            "EVN|A08|20260101120000",
            "PID|1||9990000018^^^NHS^NH||TEST^ALPHONSINE||19700102|F",
            "PV1|1|O",
        ]
    )
    assert hl7client.ack_code(await send(hl7, adt)) == "AA"
    step = app.cache.get_step("APPT100|APPT100").step
    assert (step.patient_name, step.patient_birth_date) == ("TEST^ALPHONSINE", "19700102")


async def test_did_not_attend(listener) -> None:  # type: ignore[no-untyped-def]
    app, hl7 = listener
    await send(hl7, siu("S12", "APPT200"))
    assert hl7client.ack_code(await send(hl7, siu("S26", "APPT200"))) == "AA"
    assert app.cache.get_step("APPT200|APPT200").status == StepStatus.DID_NOT_ATTEND


async def test_other_sites_and_past_days_never_reach_the_cache(listener) -> None:  # type: ignore[no-untyped-def]
    app, hl7 = listener
    assert (
        hl7client.ack_code(await send(hl7, siu("S12", "ELSEWHERE", location="SITE-OTHER"))) == "AA"
    )
    yesterday = ymd(today() - timedelta(days=1))  # refused with the window: test_hl7_names
    assert hl7client.ack_code(await send(hl7, siu("S12", "YESTERDAY", day=yesterday))) == "AE"
    assert app.cache.steps() == []


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("this is not hl7", "AR"),
        (msh("XYZ^Q99") + "\rPID|1", "AR"),
        (msh("SIU^S99^SIU_S12") + "\rSCH|1", "AR"),
        (msh("SIU^S12^SIU_S12", version="9.9") + "\rSCH|1", "AR"),
        (msh("SIU^S12^SIU_S12").replace("|P|2.5", "|X|2.5") + "\rSCH|1", "AR"),
        (siu("S12").replace("SCH|PLACER1|APPT001|", "SCH|||"), "AE"),
        (siu("S12").replace(PID, "PID|1||||TEST^NOID"), "AE"),
        (siu("S12").replace(PID, PID.replace("19700101", "19701399")), "AE"),
        (siu("S12").replace(f"{ymd(today())}103000", "notadate"), "AE"),
        (siu("S12").split("\rPID")[0], "AE"),
    ],
)
async def test_malformed_messages_are_nacked_and_change_nothing(
    listener, message: str, code: str
) -> None:  # type: ignore[no-untyped-def]
    app, hl7 = listener
    generation = app.cache.generation
    ack = await send(hl7, message)
    assert hl7client.ack_code(ack) == code
    assert "\rERR|" in ack
    assert app.cache.steps() == []
    assert app.cache.outbox_size() == 0
    assert app.cache.generation == generation


async def test_latin1_message_is_decoded_by_msh18(listener) -> None:  # type: ignore[no-untyped-def]
    app, hl7 = listener
    text = (
        siu("S12", "APPT300")
        .replace("UNICODE UTF-8", "8859/1")
        .replace("TEST^ALPHA^MARY", "TEST^ÅSA")
    )
    ack = await send(hl7, text.encode("latin-1"))
    assert hl7client.ack_code(ack) == "AA"
    assert app.cache.get_step("APPT300|APPT300").step.patient_name == "TEST^ÅSA"


async def test_retransmission_is_acknowledged_once_applied(listener) -> None:  # type: ignore[no-untyped-def]
    app, hl7 = listener
    message = siu("S12", "APPT400", control="CTRL-400")
    assert hl7client.ack_code(await send(hl7, message)) == "AA"
    events = app.cache.outbox_size()
    assert hl7client.ack_code(await send(hl7, message)) == "AA"
    assert app.cache.outbox_size() == events


async def test_unframed_bytes_close_the_connection(listener) -> None:  # type: ignore[no-untyped-def]
    _app, hl7 = listener

    def raw() -> bytes:
        with socket.create_connection(("127.0.0.1", hl7.port), timeout=10) as sock:
            sock.sendall(b"MSH|no framing\x1c\r")
            return sock.recv(100)

    assert await asyncio.to_thread(raw) == b""
    # The listener still serves the next, well-framed connection.
    assert hl7client.ack_code(await send(hl7, siu("S12", "APPT500"))) == "AA"
