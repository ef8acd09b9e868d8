"""HAProxy (Debian's package) in front of several ingest replicas, for tests.

Two ways, as the central chart offers them (``ingest.tlsTermination``):

* ``tcp`` (``pod``): TLS passed through, as a data centre's L4 load balancer does: each
  replica terminates the trailer's mutual TLS itself, so the client certificate it
  checks is the trailer's own.
* ``http`` (``ingress``): HAProxy terminates the mutual TLS (verifying the trailer's
  certificate against ``client_ca``) and passes the verified certificate on in the RFC
  9440 ``Client-Cert`` header (any such header from the client is dropped first), over
  plain HTTP from ``source``: the one address the replicas trust the header from.

Health checks every 300 ms; a replica marked down has its client sessions shut at once
(``on-marked-down shutdown-sessions``), so a trailer whose replica died reconnects to
another instead of waiting on a dead connection; ``leastconn`` spreads the trailers'
connections.

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
from typing import Literal

from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceExited
from trailerlink_testing.waiting import wait_until

_CONFIG = """\
global
    maxconn 4000

defaults
    mode {mode}
    timeout connect 2s
    # long uploads over a slow link: the ingest's own deadlines end dead clients
    timeout client 10m
    timeout server 10m
    timeout http-request 30s
    retries 2
    option redispatch

frontend trailers
    bind {host}:{port}{bind_tls}
{frontend_http}    default_backend ingest

backend ingest
    balance leastconn
    default-server inter 300ms fall 2 rise 2 on-marked-down shutdown-sessions{source}
{servers}
"""

# The verified certificate, as RFC 9440 has it (":" base64 DER ":"); a client's own
# Client-Cert header never reaches a replica.
_FRONTEND_HTTP = """\
    http-request del-header Client-Cert
    http-request set-header Client-Cert :%[ssl_c_der,base64]:
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
        *,
        mode: Literal["tcp", "http"] = "tcp",
        server_pem: tuple[Path, Path] | None = None,
        client_ca: Path | None = None,
        source: str | None = None,
    ) -> None:
        """``mode="http"`` needs ``server_pem`` (certificate, key) and ``client_ca``;
        ``source``: the address HAProxy connects to the replicas from."""
        if mode == "http" and (server_pem is None or client_ca is None):
            raise ValueError("http mode terminates mutual TLS: server_pem and client_ca")
        self.directory = Path(directory)
        self.backends = list(backends)
        self.port = port or free_port()
        self.host = host
        self.mode = mode
        self.server_pem = server_pem
        self.client_ca = client_ca
        self.source = source
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def config_file(self) -> Path:
        return self.directory / "haproxy.cfg"

    def start(self, timeout: float = 30.0) -> HAProxy:
        self.directory.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(
            f"    server replica-{n + 1} {h}:{p} check" for n, (h, p) in enumerate(self.backends)
        )
        bind_tls = ""
        if self.mode == "http":
            assert self.server_pem is not None and self.client_ca is not None
            # HAProxy reads the certificate and its key from one file.
            bundle = self.directory / "server.pem"
            bundle.write_bytes(self.server_pem[0].read_bytes() + self.server_pem[1].read_bytes())
            bundle.chmod(0o600)
            bind_tls = f" ssl crt {bundle} ca-file {self.client_ca} verify required"
        self.config_file.write_text(
            _CONFIG.format(
                mode=self.mode,
                host=self.host,
                port=self.port,
                bind_tls=bind_tls,
                frontend_http=_FRONTEND_HTTP if self.mode == "http" else "",
                source=f" source {self.source}" if self.source else "",
                servers=servers,
            )
        )
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
            raise ServiceExited(f"haproxy exited; see {self.directory / 'haproxy.log'}")
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
