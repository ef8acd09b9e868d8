"""Run a trailerlink service as a real subprocess, for tests that kill it.

    with ServiceProcess(["trailerlink-gateway"], env={...}, log_path=tmp / "gw.log") as gw:
        gw.wait_ready("http://127.0.0.1:9101/readyz")
        gw.kill9()          # SIGKILL: no clean-up runs, exactly like a power cut
        gw.start()          # same command, same environment
        gw.wait_ready(...)

The child gets the parent's environment plus ``env``, its own process group, and
stdout/stderr appended to ``log_path`` (so a test failure can show the service's log).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from trailerlink_testing.waiting import GiveUp, wait_until


def console_script(name: str) -> str:
    """Path of a console script installed beside the running interpreter."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"console script {name} not installed")
    return found


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as rsp:  # noqa: S310 - test URLs
            return 200 <= rsp.status < 300
    except (urllib.error.URLError, OSError):
        return False


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as rsp:  # noqa: S310 - test URLs
        return rsp.read().decode()


class ServiceExited(GiveUp, AssertionError):
    """The process being waited on exited: it will not become ready."""


class ServiceProcess:
    """A service subprocess that can be started, killed with SIGKILL and restarted."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ServiceProcess:
        if self.running():
            raise RuntimeError("already running")
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        self.starts += 1
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, url: str, timeout: float = 60.0) -> None:
        """Wait until ``url`` answers 2xx; fails early if the process exits."""

        def ready() -> bool:
            if not self.running():
                raise ServiceExited(f"service exited with {self.returncode()}\n{self.tail()}")
            return http_ok(url)

        wait_until(ready, timeout, f"{self.argv[0]} ready at {url}", interval=0.1)

    def kill9(self) -> None:
        """SIGKILL the process (and its group) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not stop in ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def tail(self, lines: int = 40) -> str:
        """The last lines of the log, for failure messages."""
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> ServiceProcess:
        if not self.running():
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill9()
