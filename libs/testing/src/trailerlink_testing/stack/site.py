"""What both sites share: :class:`_Stack`, the start/stop bookkeeping of one site (its
broker booting in the background, its services stopped together, its logs, how its
services run), and creating a site's Kafka topics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

from trailerlink_events.kafka import create_topics

from trailerlink_testing.kafka import KafkaBroker, KafkaCluster
from trailerlink_testing.stack.processes import Service


def _make_topics(bootstrap: str, site: str) -> None:
    asyncio.run(create_topics(bootstrap, site))  # type: ignore[arg-type]


class _Stack:
    """Start/stop bookkeeping shared by both sites."""

    runtime = "processes"
    """How the services run: ``processes`` (the workspace venv) or ``containers`` (the
    images of `make images`, see :mod:`trailerlink_testing.containers`)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs = self.dir / "logs"
        self.services: dict[str, Service] = {}
        self.site_env: dict[str, str] = {}
        """Environment every service of this site starts with (a test's choice, e.g.
        the OTLP exporter of :class:`~trailerlink_testing.jaeger.Jaeger`)."""
        self._stops: list[Callable[[], None]] = []
        self._broker_boot: Future[None] | None = None

    def boot_broker(self) -> None:
        """Start this site's broker booting in the background (a JVM start takes tens of
        seconds on 2 busy cores); ``start()`` overlaps it with the rest and waits for it."""
        if self._broker_boot is not None:
            return
        broker: KafkaBroker | KafkaCluster = self.broker  # type: ignore[attr-defined]
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"boot-{self.dir.name}")
        self._broker_boot = pool.submit(broker.start)
        pool.shutdown(wait=False)

        def stop_broker() -> None:
            with contextlib.suppress(Exception):
                self._broker_boot.result()  # type: ignore[union-attr]
            broker.stop()

        self._stops.append(stop_broker)

    def _broker_booted(self) -> None:
        assert self._broker_boot is not None
        self._broker_boot.result()

    @contextlib.contextmanager
    def booting(self) -> Iterator[_Stack]:
        """``boot_broker()`` now, and stop whatever was started however the block ends:
        lets the trailer's broker boot while the data centre starts up."""
        self.boot_broker()
        try:
            yield self
        finally:
            self.stop()

    def log_files(self) -> list[Path]:
        """The logs of our own services (not of the PACS, Kafka or the NBSS stand-in)."""
        return sorted(self.logs.glob("*.log"))

    def stop(self) -> None:
        def terminate(service: Service) -> None:
            try:
                service.proc.terminate(timeout=15)
            except Exception:  # stop everything even if one refuses
                service.kill9()

        # All at once: each drains its in-flight work in parallel with the others.
        with ThreadPoolExecutor(max_workers=max(1, len(self.services))) as pool:
            list(pool.map(terminate, self.services.values()))
        for stop in reversed(self._stops):
            with contextlib.suppress(Exception):
                stop()
        self._stops.clear()
        self._broker_boot = None

    def start(self) -> None:
        raise NotImplementedError

    def _runtime_args(self) -> dict[str, object]:
        """How this site's services start (``_start_service``'s runtime and mount)."""
        return {"runtime": self.runtime, "mount": self.dir.parent, "site_env": self.site_env}

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()  # a half-started site must not leave brokers or services behind
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
