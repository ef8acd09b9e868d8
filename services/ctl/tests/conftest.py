"""Fixtures for trailerlinkctl's tests: real services (subprocesses) on the session's
broker, and ``ctl(...)`` running the installed ``trailerlinkctl`` as an operator would."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from trailerlink_events import topics
from trailerlink_testing.kafka_reader import start_group_at_end
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess, console_script

TOKEN = "ctl-test-token-6f1c2a"
FLEET_TOPICS = [
    topics.CENTRAL_HEARTBEAT,
    topics.CENTRAL_PROCEDURE_STEP,
    topics.CENTRAL_UPLOAD_COMPLETED,
    topics.CENTRAL_OBJECT_DELIVERED,
    topics.CENTRAL_OBJECT_FAILED,
    topics.CENTRAL_OBJECT_RECEIVED,
]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)


@dataclass
class Ctl:
    """Runs ``trailerlinkctl`` with the token file and service URLs in its environment."""

    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, token: bool = True, **env: str) -> Result:
        full = {k: v for k, v in self.env.items() if token or k != "TRAILERLINKCTL_TOKEN_FILE"}
        full.update(env)
        proc = subprocess.run(
            [console_script("trailerlinkctl"), *args],
            env={
                "PATH": os.environ.get("PATH", ""),
                "HOME": str(Path.home()),
                "NO_COLOR": "1",
                **full,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    async def run(self, *args: str, **kw: object) -> Result:
        return await asyncio.to_thread(self, *args, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("token") / "admin-token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def fleet_monitor(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, token_file: Path
) -> Iterator[str]:
    """A fleet-mode monitor with the admin API on; yields its base URL."""
    workdir = tmp_path_factory.mktemp("fleet")
    port = free_port()
    group = f"ctl-monitor-{port}"
    asyncio.run(start_group_at_end(kafka_bootstrap, group, FLEET_TOPICS))
    proc = ServiceProcess(
        [console_script("trailerlink-monitor")],
        env={
            "TRAILERLINK_MODE": "fleet",
            "TRAILERLINK_HTTP_PORT": str(port),
            "TRAILERLINK_HTTP_HOST": "127.0.0.1",
            "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "TRAILERLINK_DATA_DIR": str(workdir / "data"),
            "TRAILERLINK_CONSUMER_GROUP": group,
            "TRAILERLINK_EVALUATE_INTERVAL_SECONDS": "0.5",
            "TRAILERLINK_FLEET_FILE": str(workdir / "no-fleet.yaml"),
            "TRAILERLINK_ADMIN_TOKEN_FILE": str(token_file),
        },
        log_path=workdir / "monitor.log",
    )
    proc.start()
    base = f"http://127.0.0.1:{port}"
    try:
        proc.wait_ready(f"{base}/readyz", timeout=60)
        yield base
    finally:
        proc.kill9()


@pytest.fixture(scope="module")
def ctl(fleet_monitor: str, token_file: Path) -> Ctl:
    return Ctl(
        {"TRAILERLINKCTL_TOKEN_FILE": str(token_file), "TRAILERLINKCTL_MONITOR_URL": fleet_monitor}
    )
