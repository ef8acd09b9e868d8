"""The ingest's HTTPS application, wired: who is calling (:class:`tus.Callers`), the tus
upload routes (:class:`tus.TusRoutes`) and what a trailer reads and reports beside them
(:class:`trailer_api.TrailerApi`)."""

from __future__ import annotations

from fastapi import FastAPI

from trailerlink_ingest.completion import Announcer
from trailerlink_ingest.identity import Authenticator
from trailerlink_ingest.keys import KeyStore
from trailerlink_ingest.ledger import Ledger
from trailerlink_ingest.trailer_api import TrailerApi
from trailerlink_ingest.tus import Callers, TusConfig, TusRoutes
from trailerlink_ingest.uploads import UploadStore


def build_tus_app(
    *,
    store: UploadStore,
    auth: Authenticator,
    ledger: Ledger,
    announcer: Announcer,
    cfg: TusConfig,
    keys: KeyStore | None = None,
) -> FastAPI:
    """The HTTPS application: tus routes under ``cfg.base_path``, ``/v1/receipts`` and,
    with ``keys``, the sealing keys a trailer fetches (``/v1/keys``)."""
    app = FastAPI(title="trailerlink ingest (tus)", openapi_url=None, docs_url=None, redoc_url=None)
    callers = Callers(auth, cfg)
    TrailerApi(callers, ledger, keys, cfg).mount(app)
    TusRoutes(callers, store, announcer, cfg).mount(app)
    return app
