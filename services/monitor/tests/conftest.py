"""Fixtures for the monitor's tests: the monitor as a real subprocess against the real
broker, with the topics of both sites created, and helpers to publish and scrape."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from trailerlink_events.kafka import create_topics
from trailerlink_testing.ports import free_port
from trailerlink_testing.postgres import Postgres
from trailerlink_testing.procs import ServiceProcess, console_script


@pytest.fixture(scope="session")
def topics_created(kafka_bootstrap: str) -> str:
    async def create() -> None:
        await create_topics(kafka_bootstrap, "central")
        await create_topics(kafka_bootstrap, "trailer")

    asyncio.run(create())
    return kafka_bootstrap


class Monitors:
    """Starts monitors (real subprocesses) in ``workdir``; :meth:`stop_all` kills them."""

    def __init__(self, workdir: Path, bootstrap: str) -> None:
        self.workdir = workdir
        self.bootstrap = bootstrap
        self.started: list[ServiceProcess] = []

    def __call__(self, mode: str = "fleet", **env: str) -> tuple[ServiceProcess, str]:
        port = int(env.get("TRAILERLINK_HTTP_PORT") or free_port())
        full = {
            "TRAILERLINK_MODE": mode,
            "TRAILERLINK_HTTP_PORT": str(port),
            "TRAILERLINK_HTTP_HOST": "127.0.0.1",
            "TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "TRAILERLINK_DATA_DIR": str(self.workdir / f"data-{port}"),
            "TRAILERLINK_CONSUMER_GROUP": f"monitor-{port}",
            "TRAILERLINK_EVALUATE_INTERVAL_SECONDS": "0.3",
            "TRAILERLINK_FLEET_FILE": str(self.workdir / "no-fleet.yaml"),
            **env,
        }
        proc = ServiceProcess(
            [console_script("trailerlink-monitor")],
            env=full,
            log_path=self.workdir / f"monitor-{port}.log",
        )
        proc.start()
        self.started.append(proc)
        base = f"http://127.0.0.1:{port}"
        proc.wait_ready(f"{base}/readyz", timeout=60)
        return proc, base

    def stop_all(self) -> None:
        for proc in self.started:
            proc.kill9()


MonitorFactory = Callable[..., tuple[ServiceProcess, str]]


@pytest.fixture
def start_monitor(tmp_path: Path, topics_created: str) -> Iterator[MonitorFactory]:
    monitors = Monitors(tmp_path, topics_created)
    yield monitors
    monitors.stop_all()


@pytest.fixture(scope="module")
def module_monitors(
    tmp_path_factory: pytest.TempPathFactory, topics_created: str
) -> Iterator[Monitors]:
    """Like ``start_monitor``, shared by a module's tests (they start once)."""
    monitors = Monitors(tmp_path_factory.mktemp("monitors"), topics_created)
    yield monitors
    monitors.stop_all()


def make_certificate(directory: Path, common_name: str, days: int) -> tuple[Path, Path]:
    """A self-signed EC certificate (openssl) valid for ``days``: (cert, key)."""
    cert, key = directory / f"{common_name}.crt", directory / f"{common_name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            str(days),
            "-subj",
            f"/CN={common_name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with Postgres() as pg:
        yield pg


def fresh_database(pg: Postgres) -> str:
    """A new empty database in ``pg``; its DSN."""
    import psycopg

    name = f"fleet_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg.dsn.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet_database(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The fleet monitor's state on each database: the env that selects it."""
    if request.param == "sqlite":
        return {}
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(fresh_database(request.getfixturevalue("postgres")) + "\n")
    return {"TRAILERLINK_DATABASE_DSN_FILE": str(dsn_file)}
