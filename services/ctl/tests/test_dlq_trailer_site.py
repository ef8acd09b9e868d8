"""On a trailer, `dlq` goes to the monitor agent, which serves the trailer's dead-letter
topic; a monitor without an admin token file has no admin API at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from trailerlink_events import topics
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess, console_script

from .conftest import Ctl

pytestmark = pytest.mark.kafka


def _agent(tmp: Path, bootstrap: str, **env: str) -> tuple[ServiceProcess, str]:
    port = free_port()
    (tmp / "spool").mkdir(exist_ok=True)
    proc = ServiceProcess(
        [console_script("trailerlink-monitor")],
        env={
            "TRAILERLINK_MODE": "agent",
            "TRAILERLINK_HTTP_PORT": str(port),
            "TRAILERLINK_HTTP_HOST": "127.0.0.1",
            "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TRAILERLINK_DATA_DIR": str(tmp / f"data-{port}"),
            "TRAILERLINK_SPOOL_DIR": str(tmp / "spool"),
            "TRAILERLINK_HEARTBEAT_INTERVAL_SECONDS": "60",
            **env,
        },
        log_path=tmp / f"agent-{port}.log",
    )
    proc.start()
    base = f"http://127.0.0.1:{port}"
    proc.wait_ready(f"{base}/readyz", timeout=60)
    return proc, base


@pytest.fixture
def agents(tmp_path: Path, kafka_bootstrap: str) -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for proc in started:
        proc.kill9()


def test_agent_serves_the_trailer_dead_letters_and_no_token_file_means_no_admin_api(
    tmp_path: Path, kafka_bootstrap: str, token_file: Path, agents
) -> None:
    proc, base = _agent(tmp_path, kafka_bootstrap, TRAILERLINK_ADMIN_TOKEN_FILE=str(token_file))
    agents.append(proc)
    ctl = Ctl({"TRAILERLINKCTL_TOKEN_FILE": str(token_file), "TRAILERLINKCTL_MONITOR_URL": base})
    listed = ctl("dlq", "list", "--json")
    assert listed.code == 0, listed.err
    assert listed.json()["topic"] == topics.TRAILER_DEAD_LETTER

    off, off_base = _agent(tmp_path, kafka_bootstrap)
    agents.append(off)
    refused = ctl("dlq", "list", "--json", TRAILERLINKCTL_MONITOR_URL=off_base)
    assert refused.code == 4 and "disabled" in refused.json()["error"]
