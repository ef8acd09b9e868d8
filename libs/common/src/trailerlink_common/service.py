"""The skeleton every service runs in.

A :class:`Service` owns an HTTP app (FastAPI, served by uvicorn) with ``/healthz``,
``/readyz`` and ``/metrics``, plus the service's long-running tasks (Kafka consumers,
DICOM servers, pollers). :meth:`Service.run` serves until SIGTERM or SIGINT, then
asks every task to stop, waits up to ``shutdown_grace_seconds`` and returns.

Typical ``main``::

    def build() -> Service:
        settings = load_settings(GatewaySettings)
        service = Service("gateway", settings, version=__version__)
        service.add_readiness_check("kafka", producer.check_reachable)
        service.add_task("consumer", runner.run)    # run(stop: asyncio.Event)
        return service

    def main() -> None:
        run_service("gateway", build)               # bad settings: one line, exit 2
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Generator
from pathlib import Path
from typing import Any, NoReturn

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest

from trailerlink_common.config import ConfigError, ServiceSettings
from trailerlink_common.logs import configure_logging
from trailerlink_common.tracing import configure_tracing, shutdown_tracing

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]
"""An async callable that returns when the dependency answers and raises when not."""

Task = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""A long-running coroutine; it must return soon after the event is set."""

READINESS_TIMEOUT_SECONDS = 5.0

STARTUP_ERROR_EXIT_CODE = 2
"""What a service that refuses to start exits with (as every ``main`` always has)."""

BUILD_INFO = Gauge(
    "trailerlink_build_info", "Always 1; labels say what is running", ["service", "version"]
)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the Service handles SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def disk_writable_check(directory: Path) -> ReadinessCheck:
    """A readiness check that creates, fsyncs and deletes a small file in ``directory``."""

    async def check() -> None:
        def probe() -> None:
            directory.mkdir(parents=True, exist_ok=True)
            probe_path = directory / f".readyz-{uuid.uuid4().hex}"
            try:
                fd = os.open(probe_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, b"ok")
                    os.fsync(fd)
                finally:
                    os.close(fd)
            finally:
                probe_path.unlink(missing_ok=True)

        await asyncio.to_thread(probe)

    return check


class Service:
    """One trailerlink process: HTTP endpoints plus long-running tasks."""

    def __init__(self, name: str, settings: ServiceSettings, version: str = "0.1.0") -> None:
        self.name = name
        self.settings = settings
        self.version = version
        self.stopping = asyncio.Event()
        self._checks: dict[str, ReadinessCheck] = {}
        self._tasks: dict[str, Task] = {}
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self.started_at = time.time()
        configure_logging(name, settings.log_level)
        configure_tracing(name, settings.otel_exporter, version)
        BUILD_INFO.labels(name, version).set(1)
        self.app = FastAPI(title=f"trailerlink {name}", version=version)
        self._add_standard_routes()

    # --- registration ------------------------------------------------------------
    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        """``/readyz`` answers 200 only while every registered check passes."""
        self._checks[name] = check

    def add_task(self, name: str, task: Task) -> None:
        """Run ``task(stop_event)`` for the life of the service."""
        self._tasks[name] = task

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` after the tasks have stopped (close clients, flush)."""
        self._on_stop.append(callback)

    # --- HTTP --------------------------------------------------------------------
    def _add_standard_routes(self) -> None:
        app = self.app

        @app.get("/healthz", include_in_schema=False)
        async def healthz() -> JSONResponse:
            # Alive means the event loop answers; a stopping service is not alive anymore.
            if self.stopping.is_set():
                return JSONResponse({"status": "stopping"}, status_code=503)
            return JSONResponse({"status": "ok", "service": self.name, "version": self.version})

        @app.get("/readyz", include_in_schema=False)
        async def readyz() -> JSONResponse:
            results = await self.check_readiness()
            ready = all(r == "ok" for r in results.values()) and not self.stopping.is_set()
            return JSONResponse(
                {"status": "ready" if ready else "not ready", "checks": results},
                status_code=200 if ready else 503,
            )

        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def check_readiness(self) -> dict[str, str]:
        """Run every readiness check concurrently; map name -> "ok" or the failure."""

        async def run_one(check: ReadinessCheck) -> str:
            try:
                await asyncio.wait_for(check(), READINESS_TIMEOUT_SECONDS)
            except TimeoutError:
                return "timeout"
            except Exception as exc:
                return f"failed: {type(exc).__name__}"
            return "ok"

        names = list(self._checks)
        outcomes = await asyncio.gather(*(run_one(self._checks[n]) for n in names))
        return dict(zip(names, outcomes, strict=True))

    # --- running -----------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the process exit code."""
        return asyncio.run(self.serve())

    async def serve(self) -> int:
        """Async form of :meth:`run`, for callers that own the event loop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._request_stop, sig)
        server = _Server(
            uvicorn.Config(
                self.app,
                host=self.settings.http_host,
                port=self.settings.http_port,
                log_config=None,
                access_log=False,
                lifespan="off",
            )
        )
        running = {
            asyncio.create_task(task(self.stopping), name=name): name
            for name, task in self._tasks.items()
        }
        http = asyncio.create_task(self._serve_http(server), name="http")
        log.info(
            "service started", extra={"version": self.version, "http_port": self.settings.http_port}
        )
        exit_code = 0
        stop_wait = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait(
            {*running, http, stop_wait}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if task is not stop_wait and not self.stopping.is_set():
                # A task ending on its own is a fault: stop the whole service so the
                # orchestrator restarts it rather than running half a service.
                exc = task.exception()
                log.error(
                    "task ended unexpectedly; stopping",
                    extra={
                        "task": task.get_name(),
                        "error": f"{type(exc).__name__}: {exc}" if exc else "returned",
                    },
                )
                exit_code = 1
        self.stopping.set()
        stop_wait.cancel()
        await self._drain(running)
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(http, 5)
        for callback in self._on_stop:
            try:
                await asyncio.wait_for(callback(), self.settings.shutdown_grace_seconds)
            except Exception:
                log.exception("stop callback failed")
        shutdown_tracing()
        log.info("service stopped", extra={"exit_code": exit_code})
        return exit_code

    async def _serve_http(self, server: uvicorn.Server) -> None:
        # uvicorn calls sys.exit(1) when it cannot bind; turn that into an ordinary
        # failure so the service stops with a logged reason instead of a stray SystemExit.
        try:
            await server.serve()
        except SystemExit:
            raise OSError(f"HTTP port {self.settings.http_port} could not be served") from None

    def _request_stop(self, sig: signal.Signals) -> None:
        log.info("stop requested", extra={"signal": sig.name})
        self.stopping.set()

    async def _drain(self, running: dict[asyncio.Task[None], str]) -> None:
        pending = [t for t in running if not t.done()]
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=self.settings.shutdown_grace_seconds)
        for task in late:
            log.warning("task did not stop in time; cancelling", extra={"task": running[task]})
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=5)


def cannot_start(exc: BaseException) -> str:
    """``cannot start: Type: message``, the wording of services whose start-up errors
    are of several kinds (a missing file, a bad DSN) and say which."""
    return f"cannot start: {type(exc).__name__}: {exc}"


def run_service(
    name: str,
    build: Callable[[], Service],
    startup_errors: tuple[type[BaseException], ...] = (ConfigError,),
    *,
    describe: Callable[[BaseException], str] = str,
    report: Callable[[str], None] | None = None,
) -> NoReturn:
    """Build a service and run it; the process exits with its exit code.

    ``build`` loads the settings and assembles the :class:`Service`. One of
    ``startup_errors`` raised while it does means the service cannot start as
    configured: the operator gets one line on stderr, ``trailerlink-<name>: <message>``,
    and exit code 2. One line, because that is what they can act on: the message names
    the variable or file to fix. No traceback, because a traceback may carry data (a
    chained exception can quote a setting's value or a file's contents), while these
    messages name variables and files, never what is in them. Any other exception is a
    bug and keeps its traceback.

    ``describe`` turns the error into the message (``str``, or :func:`cannot_start`);
    ``report`` replaces the printed line where a service reports it another way.
    """
    try:
        service = build()
    except startup_errors as exc:
        message = describe(exc)
        if report is None:
            print(f"trailerlink-{name}: {message}", file=sys.stderr)
        else:
            report(message)
        raise SystemExit(STARTUP_ERROR_EXIT_CODE) from None
    raise SystemExit(service.run())
