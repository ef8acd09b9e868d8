"""Run Jaeger (a real trace backend) on free 127.0.0.1 ports, spans kept in memory.

    with Jaeger(tmp_path / "jaeger") as jaeger:
        env = {"TRAILERLINK_OTEL_EXPORTER": "otlp", **jaeger.exporter_env()}
        ...                                   # services export their spans over OTLP/HTTP
        jaeger.traces("trailerlink-gateway")  # Jaeger's HTTP query API: /api/traces

The binary is Jaeger v2 (``github.com/jaegertracing/jaeger/cmd/jaeger``), built from the
Go module proxy the first time it is wanted: ``go install pkg@version`` refuses that
module (its go.mod has a replace directive), so it is built as a tool of a small module
of its own under ``<cache>/tools/jaeger-<version>/`` (``TRAILERLINK_CACHE`` or
~/.cache/trailerlink), once per machine. Set ``JAEGER`` to use another binary.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from trailerlink_testing.kafka import cache_dir
from trailerlink_testing.ports import free_port
from trailerlink_testing.waiting import wait_until

JAEGER_MODULE = "github.com/jaegertracing/jaeger"
JAEGER_VERSION = "v1.75.0"  # the module's tag of Jaeger v2.12
BUILD_TIMEOUT_SECONDS = 1800.0  # a cold build on 2 busy cores takes several minutes

_CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    traces:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_port}
    grpc:
      endpoint: 127.0.0.1:{query_grpc_port}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_port}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


class JaegerUnavailable(RuntimeError):
    """Jaeger cannot be built here (no Go toolchain, or the build failed)."""


def _go() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    fallback = Path("/usr/local/go/bin/go")  # the official tarball, outside PATH on some hosts
    return str(fallback) if fallback.is_file() else None


def jaeger_binary() -> Path:
    """The Jaeger binary at :data:`JAEGER_VERSION`, built first if it is not there yet.

    Raises :class:`JaegerUnavailable` when it is not there and cannot be built."""
    override = os.environ.get("JAEGER")
    if override:
        return Path(override)
    home = cache_dir() / "tools" / f"jaeger-{JAEGER_VERSION}"
    binary, marker = home / "jaeger", home / ".complete"
    if marker.exists() and binary.is_file():
        return binary
    go = _go()
    if go is None:
        raise JaegerUnavailable("no Go toolchain to build Jaeger from the Go module proxy")
    module = home / "mod"
    module.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes must not build at once
        if marker.exists() and binary.is_file():
            return binary
        (module / "go.mod").write_text("module trailerlink.local/tools/jaeger\n\ngo 1.25\n")
        steps = (
            [go, "get", "-tool", f"{JAEGER_MODULE}/cmd/jaeger@{JAEGER_VERSION}"],
            [go, "build", "-o", str(binary), f"{JAEGER_MODULE}/cmd/jaeger"],
        )
        for argv in steps:
            done = subprocess.run(
                argv, cwd=module, capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS
            )
            if done.returncode != 0:
                raise JaegerUnavailable(f"{' '.join(argv[1:3])} failed: {done.stderr[-2000:]}")
        marker.write_text(JAEGER_VERSION)
    return binary


class Jaeger:
    """One Jaeger process: OTLP/HTTP in on ``otlp_port``, the query API on ``query_port``."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.otlp_port = free_port()
        self.query_port = free_port()
        self.query_grpc_port = free_port()
        self.log_path = self.dir / "jaeger.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def otlp_endpoint(self) -> str:
        """Base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the SDK appends /v1/traces)."""
        return f"http://127.0.0.1:{self.otlp_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def exporter_env(self) -> dict[str, str]:
        """What a trailerlink service needs to export its spans here."""
        return {
            "TRAILERLINK_OTEL_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            # Export promptly: a test looks for the spans seconds after the work.
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }

    def start(self, timeout: float = 60.0) -> Jaeger:
        binary = jaeger_binary()
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "config.yaml"
        config.write_text(
            _CONFIG.format(
                otlp_port=self.otlp_port,
                query_port=self.query_port,
                query_grpc_port=self.query_grpc_port,
            )
        )
        with open(self.log_path, "ab") as log:
            # Jaeger's own spans would go to a default collector that is not there.
            env = {**os.environ, "OTEL_TRACES_EXPORTER": "none"}
            self.proc = subprocess.Popen(
                [str(binary), "--config", f"file:{config}"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(
            self._answers, timeout, f"Jaeger's query API on port {self.query_port}", interval=0.2
        )
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"jaeger exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
            )
        try:
            self._get("/api/services")
        except (OSError, urllib.error.URLError):
            return False
        return True

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)

    # --- the query API --------------------------------------------------------------
    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"{self.query_url}{path}{query}"  # http to 127.0.0.1 only
        with urllib.request.urlopen(url, timeout=10) as rsp:  # noqa: S310
            return json.loads(rsp.read())

    def services(self) -> list[str]:
        """Service names that have sent spans."""
        return list(self._get("/api/services").get("data") or [])

    def traces(
        self, service: str, limit: int = 1000, lookback: str = "1h", **params: str
    ) -> list[dict[str, Any]]:
        """Whole traces holding a span of ``service`` (Jaeger's JSON: traceID, spans with
        their references and tags, processes with their service names)."""
        return list(
            self._get(
                "/api/traces", service=service, limit=str(limit), lookback=lookback, **params
            ).get("data")
            or []
        )

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        try:
            found = self._get(f"/api/traces/{trace_id}").get("data") or []
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return found[0] if found else None

    def __enter__(self) -> Jaeger:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
