"""Upstream adapter 2: an HL7 v2 listener over MLLP for bookings and demographics.

Each framed message (0x0B ... 0x1C 0x0D) is decoded, parsed (python-hl7), turned into a
worklist operation and applied in one cache transaction; only then is it acknowledged
AA. A message we cannot understand is rejected AR, one we understand but cannot apply
gets AE; in both cases nothing changed. A retransmission (same MSH-10) is acknowledged
again without being applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import hl7
from hl7.mllp import InvalidBlockError, start_hl7_server

from trailerlink_worklist import hl7msg, metrics
from trailerlink_worklist.model import Source
from trailerlink_worklist.settings import WorklistSettings
from trailerlink_worklist.upstream import LinkStatus
from trailerlink_worklist.worklist import NotFound, Worklist

log = logging.getLogger(__name__)

ADAPTER = "hl7"
MAX_MESSAGE_BYTES = 1 << 20


class Hl7Listener:
    """The MLLP server; :meth:`handle` is its protocol-free core."""

    def __init__(self, settings: WorklistSettings, worklist: Worklist) -> None:
        self.settings = settings
        self.worklist = worklist
        self.link = LinkStatus(ADAPTER)
        self._server: asyncio.base_events.Server | None = None

    def request_refresh(self) -> None:
        """HL7 is pushed to us: there is nothing to ask for."""

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        tls = self.settings.hl7_tls()
        self._server = await start_hl7_server(
            self._client,
            self.settings.hl7_listen_host,
            self.settings.hl7_listen_port,
            limit=MAX_MESSAGE_BYTES,
            ssl=tls,
        )
        log.info("HL7 MLLP listening", extra={"port": self.port, "tls": tls is not None})

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _client(
        self, reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter
    ) -> None:
        try:
            while True:
                try:
                    block = await reader.readblock()
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the sender closed the connection
                except (InvalidBlockError, ValueError) as exc:
                    # Without a start block we cannot find the next message: hang up.
                    log.warning(
                        "HL7 connection sent unframed data; closing",
                        extra={"error": type(exc).__name__},
                    )
                    return
                reply = await asyncio.to_thread(self.handle, block)
                writer.writeblock(reply.encode("utf-8"))
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def handle(self, raw: bytes) -> str:
        """Apply one message; returns the acknowledgement to send (AA, AE or AR)."""
        message = None
        kind = "unknown"
        try:
            text, codec, fallback = hl7msg.decode(raw, self.settings.hl7_encoding)
            message = hl7msg.parse(text, codec)
            kind = "_".join(p for p in hl7msg.message_type(message) if p) or "unknown"
            if fallback:
                metrics.CHARSET_FALLBACKS.labels(ADAPTER, fallback).inc()
                log.warning(
                    "HL7 message with non-ASCII text and no MSH-18 decoded with the fallback",
                    extra={
                        "message_type": kind,
                        "charset": fallback,
                        "control_id": hl7msg.field(message, "MSH", 10, kind="text"),
                    },
                )
            control_id = hl7msg.field(message, "MSH", 10)
            if self.worklist.cache.hl7_seen(control_id):
                self._count(kind, "AA")
                return self._ack(message, "AA", "duplicate: already applied")
            action = hl7msg.interpret(message)
            applied = self._apply(action)
            with self.worklist.cache.transaction() as conn:
                self.worklist.cache.mark_hl7_seen(conn, control_id)
            self.worklist.mark_synced()
            self.link.ok()
        except hl7msg.Hl7Refused as refused:
            self._count(kind, refused.ack)
            log.warning(
                "HL7 message refused",
                extra={
                    "message_type": kind,
                    "ack": refused.ack,
                    "error_code": refused.code,
                    "reason": refused.text,
                },
            )
            return self._ack(message, refused.ack, refused.text, refused.code)
        except Exception as exc:
            self._count(kind, "AE")
            log.error(
                "HL7 message not applied", extra={"message_type": kind, "error": type(exc).__name__}
            )
            return self._ack(
                message, "AE", "internal error; resend later", hl7msg.APPLICATION_INTERNAL_ERROR
            )
        self._count(kind, "AA")
        log.info("HL7 message applied", extra={"message_type": kind, "result": applied})
        return self._ack(message, "AA")

    def _apply(self, action: hl7msg.Action) -> str:
        wl = self.worklist
        if isinstance(action, hl7msg.Upsert):
            step = wl.site.complete(action.step)
            if not wl.site.accepts(step):
                return "not for this trailer"
            first, last = wl.window()
            if not first <= step.scheduled_date <= last:
                # AE, not AA: a booking acknowledged and then dropped is a woman missing
                # from the modality's list with nobody told (issue #18). The reason names
                # the window, so the integration engine's operator knows what to fix.
                when = "before" if step.scheduled_date < first else "after"
                raise hl7msg.Hl7Refused(
                    "AE",
                    hl7msg.APPLICATION_INTERNAL_ERROR,
                    f"start {step.scheduled_date} {when} worklist window {first}-{last}; "
                    "not booked",
                )
            change = wl.upsert(action.step, Source.HL7)
            return change.change if change else "unchanged"
        if isinstance(action, hl7msg.Cancel):
            change = wl.cancel(action.key, Source.HL7)
            return "cancelled" if change else "not in cache"
        if isinstance(action, hl7msg.SetStatus):
            try:
                wl.set_status(action.key, action.status)
            except NotFound:
                return "not in cache"
            return action.status.value
        if isinstance(action, hl7msg.UpdatePatient):
            changes = wl.update_patient(action.patient_id, Source.HL7, action.update)
            return f"{len(changes)} steps updated"
        return f"ignored: {action.reason}"

    def _ack(
        self, message: hl7.Message | None, code: str, text: str = "", error_code: str = ""
    ) -> str:
        return hl7msg.ack(
            message,
            code,
            text,
            error_code,
            application=self.settings.hl7_application,
            facility=self.settings.trailer_id,
        )

    @staticmethod
    def _count(kind: str, ack: str) -> None:
        known = (
            kind
            if kind
            in {
                "SIU_S12",
                "SIU_S13",
                "SIU_S14",
                "SIU_S15",
                "SIU_S17",
                "SIU_S26",
                "ORM_O01",
                "ADT_A08",
                "ADT_A31",
            }
            else "other"
        )
        metrics.HL7_MESSAGES.labels(known, ack).inc()
