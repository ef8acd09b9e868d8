"""Entry point of ``trailerlink-codec``: settings, keys, worker pool, Kafka, HTTP.

Readiness means "objects can be sealed now": Kafka answers, the outgoing disk takes
writes, and the spool is readable. Start-up fails (exit code 2) on unusable keys — in
particular when a private key is configured where only data-centre public keys belong.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from trailerlink_common.config import ConfigError, load_settings
from trailerlink_common.durable import remove_partials
from trailerlink_common.service import Service, disk_writable_check, run_service
from trailerlink_crypto.atrest import SpoolKey, SpoolKeyring
from trailerlink_events.kafka import ConsumerRunner, EventProducer, RetryPolicy
from trailerlink_events.topics import OBJECT_RECEIVED, TRAILER_DEAD_LETTER
from trailerlink_sealed import SealOptions

from trailerlink_codec import __version__
from trailerlink_codec.handler import CodecHandler
from trailerlink_codec.keys import SealingKeys
from trailerlink_codec.sealer import Sealer
from trailerlink_codec.settings import CodecSettings

log = logging.getLogger(__name__)


def _spool_keys(settings: CodecSettings) -> SpoolKeyring:
    try:
        current = SpoolKey.from_file(settings.spool_key_file)
        older = [SpoolKey.from_file(p) for p in settings.old_spool_key_paths()]
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"TRAILERLINK_SPOOL_KEY_FILE / TRAILERLINK_SPOOL_OLD_KEY_FILES: "
            f"cannot load a spool key ({type(exc).__name__})"
        ) from None
    return SpoolKeyring(current, older)


def _recipients(settings: CodecSettings) -> SealingKeys:
    try:
        return SealingKeys(settings.sealing_public_keys, settings.sealing_current_key_id)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"TRAILERLINK_SEALING_PUBLIC_KEYS: {exc}") from None


def build(settings: CodecSettings) -> Service:
    """Assemble the service. Raises ConfigError for unusable settings or keys."""
    spool_keys = _spool_keys(settings)
    recipients = _recipients(settings)
    service = Service("codec", settings, version=__version__)
    outgoing = settings.resolved_outgoing_dir()
    outgoing.mkdir(parents=True, exist_ok=True)
    removed = remove_partials(outgoing)
    if removed:
        log.info("removed partial sealed objects left by a killed run", extra={"removed": removed})
    options = SealOptions(
        pixel_codec=settings.pixel_codec,
        zstd_level=settings.zstd_level,
        chunk_size=settings.chunk_size_bytes,
        producer=settings.trailer_id,
    )
    sealer = Sealer(settings.resolved_spool_dir(), spool_keys, outgoing, recipients, options)
    executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="seal")
    client_id = settings.kafka_client_id or "codec"
    producer = EventProducer(settings.kafka_bootstrap_servers, client_id=client_id)
    handler = CodecHandler(sealer, producer, settings.trailer_id, executor)
    runner = ConsumerRunner(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.consumer_group,
        topics=[OBJECT_RECEIVED],
        handler=handler.handle,
        producer=producer,
        dead_letter_topic=TRAILER_DEAD_LETTER,
        retry=RetryPolicy(),
        client_id=client_id,
    )
    log.info(
        "sealing for data-centre key",
        extra={
            "key_id": recipients.current.key_id,
            "known_key_ids": recipients.key_ids,
            "pixel_codec": settings.pixel_codec,
            "workers": settings.workers,
        },
    )

    async def consume(stop: asyncio.Event) -> None:
        if await producer.connect(stop, max_backoff_seconds=10.0):
            await runner.run(stop)

    async def spool_readable() -> None:
        root: Path = settings.resolved_spool_dir()
        if not await asyncio.to_thread(root.is_dir):
            raise FileNotFoundError("spool root missing")

    async def shutdown() -> None:
        await producer.stop()
        # Not wait=True: that would block the event loop. A seal still running finishes
        # before the interpreter exits (or is killed: its .partial goes at next start).
        executor.shutdown(wait=False, cancel_futures=True)

    service.add_task("consumer", consume)
    service.add_readiness_check("kafka", producer.check_reachable)
    service.add_readiness_check("outgoing", disk_writable_check(outgoing))
    service.add_readiness_check("spool", spool_readable)
    service.on_stop(shutdown)
    return service


def main() -> None:
    run_service("codec", lambda: build(load_settings(CodecSettings)))


if __name__ == "__main__":
    main()
