"""Run tusd (the reference tus server) on a free port with its own upload directory.

    with Tusd(tmp_path / "tusd") as server:
        server.url                  # http://127.0.0.1:<port>/files/
        server.uploads()            # the .info records: ID, Size, Offset, MetaData
        server.data(upload_id)      # bytes received so far
        server.stop(); server.start()   # a server that vanishes and comes back

Build it once with ``scripts/install-tools.sh`` (``go install
github.com/tus/tusd/v2/cmd/tusd@v2.9.1``); :func:`tusd_binary` finds it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceExited
from trailerlink_testing.waiting import wait_until

TUSD_VERSION = "v2.9.1"


def tusd_binary() -> str | None:
    """Path of the tusd binary ($TUSD, $(go env GOPATH)/bin, PATH), or None."""
    candidates = [
        os.environ.get("TUSD", ""),
        str(Path.home() / "go" / "bin" / "tusd"),
        shutil.which("tusd") or "",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


class Tusd:
    """One tusd process; ``prefix`` runs it inside something (e.g. ``ip netns exec ns``)."""

    def __init__(
        self,
        upload_dir: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        base_path: str = "/files/",
        extra_args: Sequence[str] = (),
        prefix: Sequence[str] = (),
        log_path: Path | None = None,
    ) -> None:
        binary = tusd_binary()
        if binary is None:
            raise FileNotFoundError("tusd not installed: run scripts/install-tools.sh")
        self.binary = binary
        self.upload_dir = Path(upload_dir)
        self.host = host
        self.port = port or free_port()
        self.base_path = base_path
        self.extra_args = list(extra_args)
        self.prefix = list(prefix)
        self.log_path = log_path or self.upload_dir.parent / f"tusd-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.base_path}"

    def start(self, timeout: float = 30.0) -> Tusd:
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            *self.prefix,
            self.binary,
            "-host",
            self.host,
            "-port",
            str(self.port),
            "-upload-dir",
            str(self.upload_dir),
            "-base-path",
            self.base_path,
            "-disable-cors",
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(self._answers, timeout, f"tusd on port {self.port}", interval=0.1)
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServiceExited(f"tusd exited with {self.proc.returncode}")
        if self.prefix:  # inside a namespace: check from there
            probe = f"import socket; socket.create_connection(({self.host!r}, {self.port}), 1)"
            done = subprocess.run(
                [*self.prefix, sys.executable, "-c", probe], capture_output=True, timeout=10
            )
            return done.returncode == 0
        import socket

        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Kill tusd (SIGKILL: the server vanishes, uploads stay on disk)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def uploads(self) -> list[dict[str, object]]:
        """Every upload tusd knows (its .info files), oldest first."""
        infos = sorted(self.upload_dir.glob("*.info"), key=lambda p: p.stat().st_mtime)
        found = []
        for info in infos:
            try:
                found.append(json.loads(info.read_text()))
            except (OSError, ValueError):
                continue
        return found

    def data(self, upload_id: str) -> bytes:
        return (self.upload_dir / upload_id).read_bytes()

    def offset(self, upload_id: str) -> int:
        """Bytes tusd holds for an upload right now (the size of its data file)."""
        try:
            return (self.upload_dir / upload_id).stat().st_size
        except FileNotFoundError:
            return 0

    def __enter__(self) -> Tusd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
