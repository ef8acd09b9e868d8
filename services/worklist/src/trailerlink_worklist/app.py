"""Wiring: builds the worklist's parts from its settings and registers them with the
shared service skeleton (tasks, readiness checks, staff routes)."""

from __future__ import annotations

import asyncio
import logging
import socket

from trailerlink_common.service import Service
from trailerlink_common.stopping import sleep_or_stop
from trailerlink_events import topics
from trailerlink_events.kafka import ConsumerRunner, EventProducer

from trailerlink_worklist.admin_api import WorklistAdmin
from trailerlink_worklist.atrest import FieldCipher, load_key
from trailerlink_worklist.auth import CsrfTokens, StaffAuth, load_credentials
from trailerlink_worklist.cache import Cache
from trailerlink_worklist.forward import CorrectionForwarder, Hl7Sender, StatusForwarder
from trailerlink_worklist.model import SiteFilter
from trailerlink_worklist.mpps import MppsStore
from trailerlink_worklist.outbox import make_publisher
from trailerlink_worklist.scp import WorklistScp
from trailerlink_worklist.settings import WorklistSettings
from trailerlink_worklist.staff import StaffPage
from trailerlink_worklist.upstream import UpstreamAdapter
from trailerlink_worklist.upstream.dicom_mwl import MwlPoller
from trailerlink_worklist.upstream.hl7_listener import Hl7Listener
from trailerlink_worklist.worklist import Clock, Worklist

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 30.0


class WorklistApp:
    """Every part of one worklist process."""

    def __init__(self, settings: WorklistSettings, clock: Clock | None = None) -> None:
        """Raises :class:`~trailerlink_common.config.ConfigError` (``CacheKeyError``) if
        the cache key cannot be loaded or is not the key the cache was written with."""
        self.settings = settings
        self.clock = clock or Clock(settings.timezone)
        self.cache = Cache(
            settings.resolved_cache_path(), FieldCipher(load_key(settings.worklist_key_file))
        )
        site = SiteFilter(settings.site_code, tuple(settings.station_ae_list()), settings.modality)
        self.worklist = Worklist(
            self.cache, site, settings.trailer_id, self.clock, settings.horizon_days
        )
        self.mpps = MppsStore(self.cache, settings.trailer_id, self.clock)
        self.scp = WorklistScp(settings, self.cache, self.mpps)
        client_id = settings.kafka_client_id or "worklist"
        # Dead letters of the consumers below; the outbox publisher has its own producer.
        self.producer = EventProducer(settings.kafka_bootstrap_servers, client_id=client_id)
        self.publisher = make_publisher(self.cache, settings.kafka_bootstrap_servers, client_id)
        self.upstream: UpstreamAdapter | None = None
        if settings.upstream == "dicom_mwl":
            self.upstream = MwlPoller(settings, self.worklist)
        elif settings.upstream == "hl7":
            self.upstream = Hl7Listener(settings, self.worklist)
        self.hl7_sender = Hl7Sender(
            settings.upstream_hl7_host,
            settings.upstream_hl7_port,
            settings.upstream_timeout_seconds,
            settings.upstream_hl7_tls_context(),
        )
        self.runners: dict[str, ConsumerRunner] = {}
        if settings.corrections_route == "hl7":
            self.runners["corrections"] = ConsumerRunner(
                settings.kafka_bootstrap_servers,
                f"worklist-corrections-{settings.trailer_id}",
                [topics.DEMOGRAPHICS_CORRECTION],
                CorrectionForwarder(settings, self.hl7_sender).handle,
                self.producer,
                topics.TRAILER_DEAD_LETTER,
                client_id="worklist-corrections",
            )
        if settings.status_route != "none":
            self.runners["status"] = ConsumerRunner(
                settings.kafka_bootstrap_servers,
                f"worklist-status-{settings.trailer_id}",
                [topics.PROCEDURE_STEP],
                StatusForwarder(settings, self.cache, self.mpps, self.hl7_sender).handle,
                self.producer,
                topics.TRAILER_DEAD_LETTER,
                client_id="worklist-status",
            )
        credentials = load_credentials(settings.staff_credentials_file)
        key = (
            settings.staff_csrf_secret_file.read_bytes()
            if settings.staff_csrf_secret_file
            else None
        )
        self.staff = StaffPage(
            self.worklist,
            StaffAuth(credentials),
            CsrfTokens(key),
            self.upstream.link if self.upstream else None,
            self.request_refresh,
            settings.trailer_id,
            settings.site_code,
        )
        self.admin = WorklistAdmin(
            self.worklist,
            self.upstream.link if self.upstream else None,
            settings.trailer_id,
            settings.site_code,
        )

    def request_refresh(self) -> None:
        if self.upstream is not None:
            self.upstream.request_refresh()

    def register(self, service: Service) -> None:
        """Add tasks, readiness checks and routes to ``service``."""
        service.add_task("kafka", self._kafka)
        service.add_task("outbox", self.publisher.run)
        service.add_task("dicom", self._dicom)
        service.add_task("housekeeping", self._housekeeping)
        if self.upstream is not None:
            service.add_task("upstream", self.upstream.run)
        for name, runner in self.runners.items():
            service.add_task(name, runner.run)
        service.add_readiness_check("kafka", self.producer.check_reachable)
        service.add_readiness_check("cache", self._cache_ok)
        service.add_readiness_check("dicom", self._dicom_ok)
        service.on_stop(self.producer.stop)
        service.on_stop(self._close)
        self.staff.install(service.app)
        self.admin.install(service.app, self.settings.admin_token_file)

    async def _kafka(self, stop: asyncio.Event) -> None:
        if await self.producer.connect(stop):
            await stop.wait()

    async def _dicom(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(self.scp.start)
        try:
            await stop.wait()
        finally:
            await asyncio.to_thread(self.scp.stop)

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.worklist.purge)
                await asyncio.to_thread(self.worklist.update_gauges)
            except Exception:
                log.exception("housekeeping failed")
            await sleep_or_stop(stop, HOUSEKEEPING_SECONDS)

    async def _cache_ok(self) -> None:
        await asyncio.to_thread(self.cache.get_meta, "schema")

    async def _dicom_ok(self) -> None:
        def probe() -> None:
            host = self.settings.dicom_host
            host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
            with socket.create_connection((host, self.settings.dicom_port), timeout=2):
                pass

        await asyncio.to_thread(probe)

    async def _close(self) -> None:
        await asyncio.to_thread(self.cache.close)
