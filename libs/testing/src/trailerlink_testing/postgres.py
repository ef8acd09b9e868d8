"""A throwaway PostgreSQL (Debian's server binaries) on a free port, for tests.

    with Postgres(tmp_path / "pg") as pg:
        pg.dsn        # postgresql://trailerlink@127.0.0.1:<port>/trailerlink

``initdb`` and ``pg_ctl`` refuse to run as root, so when the tests run as root the
cluster belongs to the ``postgres`` system user (``runuser -u postgres``). Trust
authentication on 127.0.0.1 only; fsync stays on (the ledger's durability is tested).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from trailerlink_testing.ports import free_port

DATABASE = "trailerlink"
USER = "trailerlink"


def _bindir() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    if not candidates:
        raise FileNotFoundError(
            "PostgreSQL server binaries not installed (apt-get install postgresql)"
        )
    return Path(candidates[-1])


class Postgres:
    """One PostgreSQL cluster in ``directory``, started and stopped by the test."""

    def __init__(self, directory: Path | None = None, port: int | None = None) -> None:
        self.as_root = os.geteuid() == 0
        # As root, a test's tmp_path (mode 0700, root's) is out of postgres's reach: the
        # cluster then lives in a directory of its own, removed by stop().
        self._own_directory = directory is None or self.as_root
        self.directory = (
            Path(tempfile.mkdtemp(prefix="trailerlink-pg-"))
            if self._own_directory
            else Path(directory)
        )  # type: ignore[arg-type]
        self.data = self.directory / "data"
        self.port = port or free_port()
        self.bindir = _bindir()

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *argv: str) -> None:
        command = list(argv)
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> Postgres:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            shutil.chown(self.directory, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.directory} -c max_connections=50 "
            "-c shared_buffers=16MB"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.directory / "postgres.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        self._ensure_database()
        return self

    def _ensure_database(self) -> None:
        done = subprocess.run(
            [
                str(self.bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                USER,
                DATABASE,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0 and "already exists" not in done.stderr:
            raise RuntimeError(f"createdb failed: {done.stderr.strip()}")

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop("immediate")
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
