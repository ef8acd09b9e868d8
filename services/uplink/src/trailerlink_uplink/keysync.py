"""Key sync: the data centre's sealing public keys, fetched from the ingest, written
where the codec reads them; and this trailer's unsent objects per key id, reported back.

Every ``keys_poll_seconds`` (mutual TLS, the same client as uploads and receipts)::

    GET <ingest>/v1/keys  →  {"current_key_id": "dc-…",
                               "keys": [{"key_id": "dc-…", "public_key_pem": "…"}, …]}
    PUT <ingest>/v1/keys/unsent  ←  {"sealing_key_id": "dc-…",
                                     "unsent_by_key_id": {"dc-…": 12},
                                     "resendable_by_key_id": {"dc-…": 340}}

Each key is checked before it is written: a PEM X25519 *public* key (a private key is
refused, as the codec refuses one) whose computed key id is the id it is listed under.
Public keys are written first, each atomically (``<key id>.pem``), then the ``current``
marker, so the codec never sees a current key it cannot load. Keys the ingest no
longer lists (retired) are removed if they are files this sync names (``dc-<16 hex>.pem``);
other files in the directory are left alone. The report counts what the send queue
still holds (queued or awaiting a receipt) by the key it was sealed with: the ingest
keeps a private key until every trailer reports nothing left for it
(docs/adr/0004-sealing-key-rotation.md). ``resendable_by_key_id`` counts the objects a
resend could still queue (delivered, files kept; or failed): `keys retire` says how many
spool copies retiring a key makes unresendable. The key ids last listed are what
`trailerlinkctl resend` checks a study against (:attr:`KeySync.held`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from pathlib import Path
from typing import Any

import httpx
from trailerlink_common.durable import fsync_dir, write_durably
from trailerlink_common.stopping import sleep_or_stop
from trailerlink_crypto.keys import RecipientKey
from trailerlink_events.wire import UnsentReport, decode_key_entry, key_listing_parts

from trailerlink_uplink.link import LinkError, classify, http_error
from trailerlink_uplink.queue import SendQueue

log = logging.getLogger(__name__)

CURRENT_MARKER = "current"
_SYNCED_FILE = re.compile(r"^dc-[0-9a-f]{16}\.pem$")


class BadKeyListing(ValueError):
    """The ingest's answer is not a usable key listing; nothing was written."""


def parse_listing(body: Any) -> tuple[str, dict[str, bytes]]:
    """(current key id, PEM per key id) from ``GET /v1/keys``; BadKeyListing if any key
    is malformed, private, or listed under another id than its own."""
    try:
        current, entries = key_listing_parts(body)
    except ValueError as exc:
        raise BadKeyListing(str(exc)) from None
    pems: dict[str, bytes] = {}
    for raw in entries:
        try:
            entry = decode_key_entry(raw)
        except ValueError as exc:
            raise BadKeyListing(str(exc)) from None
        key_id, pem = entry.key_id, entry.public_key_pem
        try:
            key = RecipientKey.from_pem(pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise BadKeyListing(f"{key_id}: {exc}") from None
        if key.key_id != key_id:
            raise BadKeyListing(f"{key_id}: the public key's own id is {key.key_id}")
        pems[key_id] = key.to_pem()
    if not isinstance(current, str) or current not in pems:
        raise BadKeyListing("the current key id is not among the listed keys")
    return current, pems


def write_keys(directory: Path, current: str, pems: dict[str, bytes]) -> bool:
    """Make ``directory`` hold exactly the synced keys, with ``current`` marked; True if
    anything changed. Order matters (keys, then marker, then removals): a reader never
    sees a marker naming a key that is not there."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = False
    for key_id, pem in sorted(pems.items()):
        path = directory / f"{key_id}.pem"
        if not path.is_file() or path.read_bytes() != pem:
            write_durably(path, pem, mode=0o644)
            changed = True
    marker = directory / CURRENT_MARKER
    try:
        marked = marker.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        marked = ""
    if marked != current:
        write_durably(marker, (current + "\n").encode(), mode=0o644)
        changed = True
    for path in directory.iterdir():
        if _SYNCED_FILE.match(path.name) and path.name[:-4] not in pems:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            changed = True
    if changed:
        fsync_dir(directory)
    return changed


class KeySync:
    """Service task: poll the ingest's keys, write them, report unsent objects."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        keys_url: str,
        directory: Path,
        queue: SendQueue,
        poll_seconds: float,
    ) -> None:
        self.http = http
        self.keys_url = keys_url.rstrip("/")
        self.directory = Path(directory)
        self.queue = queue
        self.poll_seconds = poll_seconds
        self.held: frozenset[str] | None = None
        """Key ids the ingest listed last (it holds their private keys); None before the
        first listing."""

    async def sync_once(self) -> str:
        """One round; returns the current key id. Raises LinkError / BadKeyListing."""
        try:
            rsp = await self.http.get(self.keys_url)
        except (httpx.HTTPError, OSError) as exc:
            raise classify(exc) from None
        if rsp.status_code != 200:
            raise http_error(rsp.status_code)
        try:
            body = rsp.json()
        except ValueError:
            raise BadKeyListing("answer is not JSON") from None
        current, pems = parse_listing(body)
        self.held = frozenset(pems)
        if await asyncio.to_thread(write_keys, self.directory, current, pems):
            log.warning(
                "sealing keys updated from the data centre",
                extra={"current_key_id": current, "key_ids": sorted(pems)},
            )
        unsent = await asyncio.to_thread(self.queue.unsent_by_key)
        resendable = await asyncio.to_thread(self.queue.resendable_by_key)
        try:
            rsp = await self.http.put(
                f"{self.keys_url}/unsent",
                json=UnsentReport(current, unsent, resendable).to_json(),
            )
        except (httpx.HTTPError, OSError) as exc:
            raise classify(exc) from None
        if rsp.status_code != 204:
            raise http_error(rsp.status_code)
        return current

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sync_once()
            except LinkError as exc:
                log.info("sealing keys not fetched", extra={"kind": exc.kind})
            except BadKeyListing as exc:
                log.error(
                    "sealing key listing refused; keys unchanged", extra={"error": str(exc)[:200]}
                )
            except OSError as exc:
                log.error("sealing keys not written", extra={"error": type(exc).__name__})
            await sleep_or_stop(stop, self.poll_seconds)
