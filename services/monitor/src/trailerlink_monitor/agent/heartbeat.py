"""Agent mode (on a trailer): a heartbeat every N seconds into the trailer's Kafka,
where it waits while the link is down, and a relay that carries queued heartbeats, MPPS
events and the gateway's receipts (the audit trail's first hop, so the data centre sees
an image that has not left the trailer) to the data centre over HTTPS with the
trailer's certificate.

The heartbeat's numbers come from the trailer services' own /metrics (the uplink's
backlog, link, failed objects and operator pause/cap, the worklist's cache age,
everyone's build info and dead letters) and the spool disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry import propagate
from prometheus_client.parser import text_string_to_metric_families
from trailerlink_common.stopping import sleep_or_stop
from trailerlink_events import topics
from trailerlink_events.kafka import (
    Delivery,
    DependencyUnavailable,
    EventProducer,
    PermanentError,
)
from trailerlink_events.messages import Heartbeat, LinkState, ObjectReceived, new_meta

from trailerlink_monitor import __version__, metrics
from trailerlink_monitor.agent.canary import Canary, CanaryResult

log = logging.getLogger(__name__)

_LINK_STATES = {
    "up": LinkState.LINK_STATE_UP,
    "degraded": LinkState.LINK_STATE_DEGRADED,
    "down": LinkState.LINK_STATE_DOWN,
}


@dataclass
class Scraped:
    """The samples of one /metrics page: name -> [(labels, value)]."""

    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    def value(self, name: str, default: float = 0.0, **labels: str) -> float:
        for sample_labels, value in self.samples.get(name, []):
            if all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
        return default

    def has(self, name: str) -> bool:
        return name in self.samples


def parse_metrics(text: str) -> Scraped:
    scraped = Scraped()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            scraped.samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return scraped


def _fetch(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as rsp:  # noqa: S310 - configured URL
        return rsp.read().decode()


def build_heartbeat(
    trailer_id: str,
    sequence: int,
    pages: Mapping[str, Scraped],
    spool_dir: Path,
    *,
    certificate_not_after: float | None = None,
    canary: CanaryResult | None = None,
) -> Heartbeat:
    """A heartbeat from the scraped pages (component -> page), the spool's disk, the
    client certificate's expiry and the last canary run."""
    hb = Heartbeat(meta=new_meta("monitor", trailer_id), sequence=sequence)
    if certificate_not_after is not None:
        hb.client_certificate_not_after.FromSeconds(int(certificate_not_after))
    if canary is not None:
        hb.canary_ok = canary.ok
        hb.canary_seconds = canary.seconds
        whole = int(canary.at)  # split first: a double holds no ns-precise epoch
        hb.canary_at.seconds, hb.canary_at.nanos = whole, int((canary.at - whole) * 1e9)
    hb.versions["monitor"] = __version__
    for page in pages.values():
        for labels, _ in page.samples.get("trailerlink_build_info", []):
            if labels.get("service"):
                hb.versions[labels["service"]] = labels.get("version", "")
    # Every scraped service's dead letters: the trailer's own alerts cannot reach support.
    hb.dead_letters = int(
        sum(
            value
            for page in pages.values()
            for _, value in page.samples.get("trailerlink_kafka_dead_letters_total", [])
        )
    )
    uplink = pages.get("uplink")
    if uplink is not None:
        hb.failed_objects = int(uplink.value("trailerlink_uplink_failed_objects"))
        hb.backlog_objects = int(uplink.value("trailerlink_uplink_backlog_objects"))
        hb.backlog_bytes = int(uplink.value("trailerlink_uplink_backlog_bytes"))
        hb.oldest_unsent_age_seconds = uplink.value("trailerlink_uplink_oldest_unsent_age_seconds")
        hb.link_goodput_bytes_per_second = uplink.value(
            "trailerlink_uplink_goodput_bytes_per_second"
        )
        # The operator's hold: a paused trailer's link reads "up" while nothing leaves.
        hb.uplink_paused = uplink.value("trailerlink_uplink_paused") == 1
        hb.uplink_operator_cap_bytes_per_second = int(
            uplink.value("trailerlink_uplink_operator_cap_bytes_per_second")
        )
        hb.uplink_cap_bytes_per_second = int(
            uplink.value("trailerlink_uplink_bandwidth_cap_bytes_per_second")
        )
        hb.link_state = LinkState.LINK_STATE_UNSPECIFIED
        for name, state in _LINK_STATES.items():
            if uplink.value("trailerlink_uplink_link_state", state=name) == 1:
                hb.link_state = state
        if hb.link_state == LinkState.LINK_STATE_UNSPECIFIED and uplink.has(
            "trailerlink_uplink_link_up"
        ):
            hb.link_state = (
                LinkState.LINK_STATE_UP
                if uplink.value("trailerlink_uplink_link_up") == 1
                else LinkState.LINK_STATE_DOWN
            )
    worklist = pages.get("worklist")
    if worklist is not None:
        hb.worklist_cache_age_seconds = worklist.value("trailerlink_worklist_cache_age_seconds")
    try:
        st = os.statvfs(spool_dir)
        hb.disk_free_bytes = st.f_bavail * st.f_frsize
        hb.disk_total_bytes = st.f_blocks * st.f_frsize
    except OSError:
        log.warning(
            "spool directory not readable; disk not reported", extra={"spool_dir": str(spool_dir)}
        )
    return hb


class SequenceFile:
    """The heartbeat sequence, kept across restarts so gaps mean lost heartbeats."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def next(self) -> int:
        try:
            current = int(self.path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            current = 0
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(current + 1))
        os.replace(tmp, self.path)
        return current + 1


class HeartbeatAgent:
    """Publishes a heartbeat every ``interval`` seconds to the trailer's Kafka."""

    def __init__(
        self,
        producer: EventProducer,
        trailer_id: str,
        interval: float,
        targets: Mapping[str, str],
        spool_dir: Path,
        sequence: SequenceFile,
        certificates: Mapping[str, Path] | None = None,
        canary: Canary | None = None,
    ) -> None:
        self.certificates = dict(certificates or {})
        self.canary = canary
        self.producer = producer
        self.trailer_id = trailer_id
        self.interval = interval
        self.targets = dict(targets)
        self.spool_dir = spool_dir
        self.sequence = sequence

    async def scrape(self) -> dict[str, Scraped]:
        async def one(name: str, url: str) -> tuple[str, Scraped | None]:
            try:
                return name, parse_metrics(await asyncio.to_thread(_fetch, url))
            except (OSError, urllib.error.URLError, ValueError):
                metrics.AGENT_SCRAPE_FAILURES.labels(name).inc()
                return name, None

        results = await asyncio.gather(*(one(n, u) for n, u in self.targets.items()))
        return {name: page for name, page in results if page is not None}

    async def beat(self) -> Heartbeat:
        pages = await self.scrape()
        client = self.certificates.get("client")
        hb = build_heartbeat(
            self.trailer_id,
            self.sequence.next(),
            pages,
            self.spool_dir,
            certificate_not_after=certificate_not_after(client) if client else None,
            canary=self.canary.last if self.canary else None,
        )
        await self.producer.publish(topics.HEARTBEAT, self.trailer_id, hb)
        metrics.AGENT_HEARTBEATS.inc()
        return hb

    async def run(self, stop: asyncio.Event) -> None:
        if not await self.producer.connect(stop):
            return
        while not stop.is_set():
            export_certificate_expiry(self.certificates)
            try:
                await self.beat()
            except Exception as exc:
                # The local broker is down: the next beat tries again, the gap shows.
                log.warning("heartbeat not queued", extra={"error": type(exc).__name__})
            await sleep_or_stop(stop, self.interval)


def client_ssl_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext | None:
    """TLS 1.3 with the trailer's certificate; None when the files are not there."""
    if not (cert.is_file() and key.is_file()):
        return None
    ctx = ssl.create_default_context(cafile=str(ca) if ca.is_file() else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class Relay:
    """Kafka handler that POSTs each trailer event to the data centre. A failed POST
    raises :class:`DependencyUnavailable`: the record is retried, never dropped, and its
    offset is committed only after the data centre has it — so events queue while the
    link is down and arrive, in order, when it returns.

    Only this trailer's own events go: one stamped with another trailer's id (a service
    configured with the wrong ``TRAILERLINK_TRAILER_ID``) would be refused by the data
    centre, so it is dead-lettered on the trailer at once, as is any event the data
    centre refuses (4xx other than 408/429) — retrying a refusal cannot succeed and
    would hold back every heartbeat queued behind it."""

    def __init__(
        self, url: str, ssl_context: ssl.SSLContext | None, trailer_id: str, timeout: float = 10.0
    ) -> None:
        self.url = url
        self.trailer_id = trailer_id
        self.ssl_context = ssl_context
        self.timeout = timeout

    def _post(self, topic_name: str, body: bytes, trace_headers: Mapping[str, str]) -> int:
        request = urllib.request.Request(  # noqa: S310 - configured URL
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/x-protobuf",
                "X-Trailerlink-Topic": topic_name,
                **trace_headers,
            },
        )
        with urllib.request.urlopen(  # noqa: S310
            request, timeout=self.timeout, context=self.ssl_context
        ) as rsp:
            return rsp.status

    async def handle(self, delivery: Delivery) -> None:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # the record's trace continues over HTTP (traceparent)
        event = delivery.event
        if event.meta.trailer_id != self.trailer_id:
            raise PermanentError(
                f"event from trailer {event.meta.trailer_id!r}, not this "
                f"trailer ({self.trailer_id!r}): check its service's "
                "TRAILERLINK_TRAILER_ID"
            )
        if isinstance(event, ObjectReceived):
            event = receipt_for_audit(event)
        try:
            await asyncio.to_thread(self._post, delivery.topic, event.SerializeToString(), carrier)
        except urllib.error.HTTPError as exc:
            metrics.RELAY_FAILURES.inc()
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise PermanentError(f"data centre refused the event: HTTP {exc.code}") from None
            raise DependencyUnavailable(f"data centre answered HTTP {exc.code}") from None
        except (OSError, urllib.error.URLError) as exc:
            metrics.RELAY_FAILURES.inc()
            raise DependencyUnavailable(f"data centre unreachable: {type(exc).__name__}") from None
        metrics.RELAY_SENT.labels(delivery.topic).inc()


def receipt_for_audit(event: ObjectReceived) -> ObjectReceived:
    """What the data centre's audit trail needs of a gateway receipt: identity, time, size
    and priority. Where the object lies in the spool, its key and the modality's AE title
    stay on the trailer."""
    out = ObjectReceived(
        meta=event.meta,
        object=event.object,
        dataset_size_bytes=event.dataset_size_bytes,
        dataset_sha256=event.dataset_sha256,
        number_of_frames=event.number_of_frames,
        priority=event.priority,
    )
    if event.HasField("received_at"):
        out.received_at.CopyFrom(event.received_at)
    return out


def certificate_not_after(path: Path) -> float | None:
    """Expiry (unix seconds) of the first certificate in a PEM file; None if unreadable."""
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - cryptography comes with the workspace
        return None
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc.timestamp()


def export_certificate_expiry(certificates: Mapping[str, Path]) -> None:
    """Set the expiry gauge for each readable certificate (name -> PEM file)."""
    for name, path in certificates.items():
        expiry = certificate_not_after(path)
        if expiry is not None:
            metrics.CERTIFICATE_EXPIRY.labels(name).set(expiry)
