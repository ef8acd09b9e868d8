"""Hostile peers against the running gateway (a subprocess, as deployed): PDU headers
that claim gigabytes, slowloris, noise, stalled TLS handshakes. Each case asserts that
the gateway neither dies nor grows, that the modality's C-ECHO and C-STORE still work
within 2x of their quiet time (or 250 ms more, this shared machine's scheduling noise;
the strict p95 ratio is the benchmark row ``gateway.echo_latency_under_attack``), and
that nothing is stored for refused input."""

from __future__ import annotations

import socket
import ssl
import statistics
import time
from pathlib import Path

import pytest
from trailerlink_testing.dicom import write_study
from trailerlink_testing.hostile import (
    Slowloris,
    attacker_address,
    echo_seconds,
    noise,
    pdu_claim_flood,
    rss_bytes,
)
from trailerlink_testing.waiting import wait_until

from .conftest import AE_TITLE, Gateway, storescu

pytestmark = pytest.mark.kafka

PDU_DEADLINE = 2.0
REJECTS = "trailerlink_gateway_rejects_total"


@pytest.fixture
def gateway(gateway_factory) -> Gateway:
    return gateway_factory(
        peers="MG1",
        dicom_pdu_deadline_seconds=PDU_DEADLINE,
        dicom_tls_handshake_seconds=PDU_DEADLINE,
    )


def _quiet_echo(port: int) -> float:
    echo_seconds(port, AE_TITLE, times=2)  # warm up (first dcmtk run, page cache)
    return statistics.median(echo_seconds(port, AE_TITLE))


def _within_quiet(during: float, quiet: float) -> None:
    assert during <= max(2 * quiet, quiet + 0.25), (during, quiet)


def _stored(gateway: Gateway) -> int:
    return gateway.index().count()


def test_fifty_connections_claiming_4_gib_cost_no_memory_and_no_modality_time(
    gateway: Gateway, tmp_path: Path
) -> None:
    """Before: one such header took the gateway from 112 MiB to 4.2 GiB and stalled the
    modality's C-ECHO for seconds."""
    pid = gateway.proc.pid
    quiet = _quiet_echo(gateway.dicom_port)
    idle_rss = rss_bytes(pid)
    study = write_study(tmp_path / "study", 2, rows=256, columns=256)
    for pdu_type in (0x01, 0x04):
        with pdu_claim_flood(gateway.dicom_port, 50, pdu_type=pdu_type):
            during = statistics.median(echo_seconds(gateway.dicom_port, AE_TITLE))
            run = storescu(gateway.dicom_port, [o.path for o in study])
            assert run.returncode == 0 and not run.failed, run.output
            peak = rss_bytes(pid)
        _within_quiet(during, quiet)
    assert peak < 1.5 * idle_rss, (peak, idle_rss)
    assert rss_bytes(pid, "VmHWM") < idle_rss + 256 * 1024 * 1024
    assert gateway.metric(REJECTS, reason="pdu_too_long") >= 1
    assert _stored(gateway) == len(study)  # the modality's images, nothing else


def test_connections_claiming_just_under_the_limit_and_stalling_buffer_little(
    gateway: Gateway,
) -> None:
    """Within the A-ASSOCIATE limit, a stalled PDU holds at most that limit per
    connection, for at most the PDU deadline, in at most the total connection slots."""
    pid = gateway.proc.pid
    idle_rss = rss_bytes(pid)
    with pdu_claim_flood(gateway.dicom_port, 50, claim=65000) as socks:
        for sock in socks:
            try:
                sock.sendall(b"\x00" * 32000)
            except OSError:
                pass  # refused for the slots: closed already
        peak = rss_bytes(pid)
        wait_until(
            lambda: gateway.metric(REJECTS, reason="pdu_deadline") >= 1,
            PDU_DEADLINE + 10,
            "stalled PDUs ended at the deadline",
        )
    assert peak < idle_rss + 32 * 1024 * 1024, (peak, idle_rss)
    assert gateway.metric(REJECTS, reason="too_many_connections") >= 1
    assert echo_seconds(gateway.dicom_port, AE_TITLE, times=1)


def test_a_slowloris_cannot_keep_a_slot_past_the_deadline_or_slow_the_modality(
    gateway: Gateway, tmp_path: Path
) -> None:
    quiet = _quiet_echo(gateway.dicom_port)
    study = write_study(tmp_path / "study", 2, rows=256, columns=256)
    with Slowloris(gateway.dicom_port, connections=10, interval=0.5) as attack:
        wait_until(
            lambda: attack.cut_off >= 10,
            PDU_DEADLINE * 3 + 10,
            "every dripping connection cut off at the deadline",
        )
        during = statistics.median(echo_seconds(gateway.dicom_port, AE_TITLE))
        run = storescu(gateway.dicom_port, [o.path for o in study])
        assert run.returncode == 0 and not run.failed, run.output
    _within_quiet(during, quiet)
    assert gateway.metric(REJECTS, reason="pdu_deadline") >= 10
    assert _stored(gateway) == len(study)


def test_seeded_noise_from_many_hosts_stores_nothing_and_kills_nothing(gateway: Gateway) -> None:
    assert noise(gateway.dicom_port, 300, seed=19) >= 250
    assert echo_seconds(gateway.dicom_port, AE_TITLE, times=1)
    assert gateway.proc.running()
    assert _stored(gateway) == 0


def test_one_host_cannot_take_the_slots_the_modality_needs(gateway: Gateway) -> None:
    source = attacker_address(7)
    hogs = [
        socket.create_connection(("127.0.0.1", gateway.dicom_port), source_address=(source, 0))
        for _ in range(20)
    ]
    try:
        wait_until(
            lambda: gateway.metric(REJECTS, reason="too_many_connections_from_peer") >= 20 - 4,
            10,
            "connections over the per-peer limit closed",
        )
        assert echo_seconds(gateway.dicom_port, AE_TITLE, times=1)
    finally:
        for hog in hogs:
            hog.close()


def test_a_stalled_tls_handshake_does_not_block_the_next_modality(
    gateway_factory, tmp_path: Path
) -> None:
    """Before: the listener did TLS handshakes in its one accepting thread, so one
    connection that never spoke stopped every other one from being accepted."""
    from .test_gateway_tls import _echo, _self_signed

    cert, key = _self_signed(tmp_path)
    gateway = gateway_factory(
        peers="MG1",
        dicom_tls_cert_file=cert,
        dicom_tls_key_file=key,
        dicom_tls_handshake_seconds=PDU_DEADLINE,
    )
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    stalled = [
        socket.create_connection(
            ("127.0.0.1", gateway.dicom_port), source_address=(attacker_address(n), 0)
        )
        for n in range(3)
    ]
    try:
        started = time.monotonic()
        assert _echo(gateway.dicom_port, client)
        assert time.monotonic() - started < PDU_DEADLINE  # not after the stall ended
        wait_until(
            lambda: gateway.metric(REJECTS, reason="tls_handshake_failed") >= 3,
            PDU_DEADLINE + 10,
            "the stalled handshakes ended and counted",
        )
        assert not _echo(gateway.dicom_port, None)  # plain DICOM is refused ...
        assert gateway.metric(REJECTS, reason="tls_handshake_failed") >= 4  # ... and counted
    finally:
        for sock in stalled:
            sock.close()
    log = gateway.proc.tail(400)
    assert "DICOM TLS handshake failed" in log or "DICOM connection refused" in log
