"""The shared service skeleton, run as a real process: health, readiness, metrics,
JSON logs and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from trailerlink_testing.ports import free_port
from trailerlink_testing.waiting import wait_until

BIN = Path(sys.executable).parent


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator:
    procs: list[subprocess.Popen[bytes]] = []

    def start(bootstrap: str) -> tuple[subprocess.Popen[bytes], str, Path]:
        port = free_port()
        log = tmp_path / f"service-{port}.log"
        env = {
            **os.environ,
            "TRAILERLINK_HTTP_PORT": str(port),
            "TRAILERLINK_HTTP_HOST": "127.0.0.1",
            "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TRAILERLINK_DATA_DIR": str(tmp_path / "data"),
        }
        proc = subprocess.Popen(
            [str(BIN / "trailerlink-monitor")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(log, "wb"),
        )
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200, 30, "healthz")
        return proc, base, log

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ready_with_kafka_and_stops_cleanly_on_sigterm(start_service, kafka_bootstrap: str) -> None:
    proc, base, log = start_service(kafka_bootstrap)
    ready = wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, 30, "readyz")
    assert ready
    body = httpx.get(f"{base}/readyz").json()
    assert body["checks"] == {"kafka": "ok"}
    metrics = httpx.get(f"{base}/metrics").text
    assert 'trailerlink_build_info{service="monitor",version="0.1.0"} 1.0' in metrics

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    messages = [line["msg"] for line in lines]
    assert "service started" in messages and "service stopped" in messages
    assert all(line["service"] == "monitor" for line in lines)


def test_not_ready_but_alive_without_kafka(start_service) -> None:
    dead_port = free_port()
    proc, base, _log = start_service(f"127.0.0.1:{dead_port}")
    response = httpx.get(f"{base}/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "not ready"
    assert httpx.get(f"{base}/healthz").status_code == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) in (0, 1)


def test_taken_http_port_stops_the_service_with_a_reason(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {
            **os.environ,
            "TRAILERLINK_HTTP_PORT": str(port),
            "TRAILERLINK_HTTP_HOST": "127.0.0.1",
            "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "TRAILERLINK_DATA_DIR": str(tmp_path),
        }
        proc = subprocess.run(
            [str(BIN / "trailerlink-monitor")], env=env, capture_output=True, timeout=60
        )
    assert proc.returncode == 1
    errors = [
        json.loads(line)
        for line in proc.stderr.decode().splitlines()
        if line.startswith("{") and '"ERROR"' in line
    ]
    assert any("could not be served" in e.get("error", "") for e in errors), proc.stderr[-2000:]
