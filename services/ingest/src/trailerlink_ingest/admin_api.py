"""The ingest's admin API for `trailerlinkctl trailer enrol|revoke`.

Enrol issues a trailer certificate from the configured CA and allow-lists the trailer;
revoke takes it off the allow-list and revokes its name. Both rewrite the access-list
file atomically; every replica re-reads it within ``ACCESS_RELOAD_SECONDS`` (the file
must be on storage all replicas share and the ingest may write). Needs the admin token.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from trailerlink_common.admin import admin_guard
from trailerlink_common.durable import write_durably

from trailerlink_ingest.devca import Issued, issue

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_lock = threading.Lock()


def _load(path: Path) -> dict[str, list[str]]:
    data = json.loads(path.read_text()) if path.is_file() else {}
    return {k: list(data.get(k, [])) for k in ("allow", "revoked", "revoked_serials")}


def _save(path: Path, data: dict[str, list[str]]) -> None:
    write_durably(path, json.dumps(data, indent=2).encode(), mode=0o644)


def _check(name: str) -> None:
    if not _NAME.match(name):
        raise HTTPException(400, "trailer name must be a DNS label: a-z, 0-9 and '-'")


def add_admin_routes(
    app: FastAPI,
    access_file: Path,
    ca_cert_file: Path | None,
    ca_key_file: Path | None,
    token_file: Path | None,
) -> None:
    """Mount ``/v1/admin/trailers...`` on ``app``."""
    router = APIRouter(prefix="/v1/admin/trailers")
    guard = Depends(admin_guard(token_file))

    @router.get("")
    def listing(actor: str = guard) -> dict[str, list[str]]:
        return _load(access_file)

    @router.post("/{name}/enrol")
    def enrol(name: str, actor: str = guard) -> dict[str, object]:
        _check(name)
        if ca_cert_file is None or ca_key_file is None:
            raise HTTPException(409, "no enrolment CA configured (ENROL_CA_CERT_FILE/KEY_FILE)")
        try:
            ca_cert = x509.load_pem_x509_certificate(ca_cert_file.read_bytes())
            ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), None)
        except (OSError, ValueError):
            raise HTTPException(503, "enrolment CA unreadable") from None
        with _lock:
            data = _load(access_file)
            if name in data["revoked"]:
                raise HTTPException(409, f"trailer {name} is revoked; enrol it under a new name")
            if name in data["allow"]:
                raise HTTPException(409, f"trailer {name} is enrolled already")
            issued = issue(Issued(ca_cert, ca_key), name)  # type: ignore[arg-type]
            data["allow"].append(name)
            _save(access_file, data)
        log.warning(
            "trailer enrolled",
            extra={"trailer_id": name, "actor": actor, "serial": issued.serial_hex},
        )
        return {
            "trailer_id": name,
            "serial": issued.serial_hex,
            "not_after": issued.cert.not_valid_after_utc.isoformat(),
            "certificate_pem": issued.cert_pem().decode(),
            "private_key_pem": issued.key_pem().decode(),
            "ca_pem": ca_cert.public_bytes(serialization.Encoding.PEM).decode(),
        }

    @router.post("/{name}/revoke")
    def revoke(name: str, actor: str = guard) -> dict[str, object]:
        _check(name)
        with _lock:
            data = _load(access_file)
            if name not in data["allow"] and name not in data["revoked"]:
                raise HTTPException(404, f"unknown trailer {name}")
            data["allow"] = [n for n in data["allow"] if n != name]
            if name not in data["revoked"]:
                data["revoked"].append(name)
            _save(access_file, data)
        log.warning("trailer revoked", extra={"trailer_id": name, "actor": actor})
        return {"trailer_id": name, "revoked": True}

    app.include_router(router)
