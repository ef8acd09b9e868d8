"""What a trailer reads and reports beside its uploads, on the same mutual-TLS origin:
its receipts (``GET /v1/receipts``), the data centre's sealing public keys
(``GET /v1/keys``) and its count of queued objects per sealing key (``PUT
/v1/keys/unsent``, for key rotation)."""

from __future__ import annotations

import asyncio
import json

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from trailerlink_events.wire import UNSENT_REPORT_MAX_BYTES, UnsentReport, encode_receipts_page

from trailerlink_ingest.keys import KeyRefused, KeyStore
from trailerlink_ingest.ledger import Ledger
from trailerlink_ingest.tus import (
    MAX_RECEIPTS_PAGE,
    Callers,
    TusConfig,
    TusError,
    _int_header,
    _small_body,
    tus_handler,
)


class TrailerApi:
    """The routes above; ``keys`` None: no key routes here (404)."""

    def __init__(
        self, callers: Callers, ledger: Ledger, keys: KeyStore | None, cfg: TusConfig
    ) -> None:
        self.callers = callers
        self.ledger = ledger
        self.keys = keys
        self.cfg = cfg

    def mount(self, app: FastAPI) -> None:
        app.add_api_route("/v1/keys", self.key_listing, methods=["GET"], include_in_schema=False)
        app.add_api_route(
            "/v1/keys/unsent", self.unsent_report, methods=["PUT"], include_in_schema=False
        )
        app.add_api_route("/v1/receipts", self.receipts, methods=["GET"], include_in_schema=False)

    @tus_handler
    async def receipts(self, request: Request) -> Response:
        trailer = self.callers.trailer_of(request)
        after_text = request.query_params.get("after", "0") or "0"
        limit_text = request.query_params.get("limit", "100")
        after = _int_header(after_text, "after")
        limit = _int_header(limit_text, "limit")
        if not 1 <= limit <= MAX_RECEIPTS_PAGE:
            raise TusError(400, f"limit must be 1..{MAX_RECEIPTS_PAGE}")
        rows = await asyncio.to_thread(self.ledger.receipts, trailer, after, limit)
        next_cursor = rows[-1].cursor if rows else after
        return JSONResponse(
            encode_receipts_page([r.to_json() for r in rows], str(next_cursor), len(rows) == limit)
        )

    @tus_handler
    async def key_listing(self, request: Request) -> Response:
        self.callers.trailer_of(request)
        if self.keys is None:
            raise TusError(404, "no sealing self.keys here")
        try:
            listing = await asyncio.to_thread(self.keys.public_listing)
        except KeyRefused as exc:
            raise TusError(exc.status, exc.message) from None
        return JSONResponse(listing.to_json(), headers={"Cache-Control": "no-store"})

    @tus_handler
    async def unsent_report(self, request: Request) -> Response:
        """A trailer's count of queued-not-delivered objects per key id (rotation)."""
        trailer = self.callers.trailer_of(request)
        if self.keys is None:
            raise TusError(404, "no sealing self.keys here")
        try:
            body = json.loads(
                await _small_body(request, UNSENT_REPORT_MAX_BYTES, self.cfg.body_idle_seconds)
            )
            report = UnsentReport.from_json(body)
        except ValueError as exc:  # also JSONDecodeError
            raise TusError(400, f"bad report: {exc}") from None
        except RecursionError:
            raise TusError(400, "bad report: nested too deeply") from None
        await asyncio.to_thread(
            self.keys.record_report,
            trailer,
            report.sealing_key_id,
            report.unsent_by_key_id,
            report.resendable_by_key_id,
        )
        return Response(status_code=204)
