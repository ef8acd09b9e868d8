"""HAProxy (Debian's package) in front of several ingest replicas, for tests.

TCP mode with TLS passed through, as a data centre's L4 load balancer does: each
replica terminates the trailer's mutual TLS itself, so the client certificate it checks
is the trailer's own. Health checks every 300 ms; a replica marked down has its client
sessions shut at once (``on-marked-down shutdown-sessions``), so a trailer whose replica
died reconnects to another instead of waiting on a dead connection; ``leastconn``
spreads the trailers' connections.

    with HAProxy(tmp_path / "lb", [("127.0.0.1", 8443), ("127.0.0.1", 8444)]) as lb:
        lb.port   # where the trailers connect
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from trailerlink_testing.ports import free_port
from trailerlink_testing.waiting import wait_until

_CONFIG = """\
global
    maxconn 4000

defaults
    mode tcp
    timeout connect 2s
    # long uploads over a slow link: the ingest's own deadlines end dead clients
    timeout client 10m
    timeout server 10m
    retries 2
    option redispatch

frontend trailers
    bind {host}:{port}
    default_backend ingest

backend ingest
    balance leastconn
    default-server inter 300ms fall 2 rise 2 on-marked-down shutdown-sessions
{servers}
"""


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(found).exists():
        raise FileNotFoundError("haproxy not installed (apt-get install haproxy)")
    return found


class HAProxy:
    """One HAProxy process in the foreground, its configuration in ``directory``."""

    def __init__(
        self,
        directory: Path,
        backends: Sequence[tuple[str, int]],
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.directory = Path(directory)
        self.backends = list(backends)
        self.port = port or free_port()
        self.host = host
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def config_file(self) -> Path:
        return self.directory / "haproxy.cfg"

    def start(self, timeout: float = 30.0) -> HAProxy:
        self.directory.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(
            f"    server replica-{n + 1} {h}:{p} check" for n, (h, p) in enumerate(self.backends)
        )
        self.config_file.write_text(_CONFIG.format(host=self.host, port=self.port, servers=servers))
        binary = haproxy_binary()
        subprocess.run([binary, "-c", "-q", "-f", str(self.config_file)], check=True)
        log = open(self.directory / "haproxy.log", "ab")  # the process keeps it open
        self._process = subprocess.Popen(
            [binary, "-db", "-f", str(self.config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._accepts, timeout, f"haproxy on {self.host}:{self.port}")
        return self

    def _accepts(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"haproxy exited; see {self.directory / 'haproxy.log'}")
        with socket.create_connection((self.host, self.port), timeout=1):
            return True

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
            self._process = None

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
