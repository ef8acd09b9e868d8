"""Identity without the network: the access list, certificate names, and the RFC 9440
Client-Cert header believed only from a trusted proxy."""

from __future__ import annotations

import base64
import json
import urllib.parse

import httpx
from cryptography.hazmat.primitives.serialization import Encoding
from trailerlink_events.kafka import EventProducer
from trailerlink_ingest.completion import Announcer
from trailerlink_ingest.devca import issue, make_ca
from trailerlink_ingest.https_app import build_tus_app
from trailerlink_ingest.identity import AccessList, AccessListFile, Authenticator, parse_networks
from trailerlink_ingest.ledger import Ledger
from trailerlink_ingest.tus import TusConfig
from trailerlink_ingest.uploads import UploadStore


def _app(tmp_path, trusted: str, header: str = "client-cert"):
    ca = make_ca()
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    access = tmp_path / "access.json"
    access.write_text(json.dumps({"allow": ["trailer-01"]}))
    store = UploadStore(tmp_path / "storage")
    ledger = Ledger(sqlite_path=tmp_path / "ledger.sqlite3")
    ledger.migrate()
    app = build_tus_app(
        store=store,
        auth=Authenticator(AccessListFile(access, 0.0), tmp_path / "ca.crt"),
        ledger=ledger,
        announcer=Announcer(store, EventProducer("127.0.0.1:9")),
        cfg=TusConfig(
            identity_source="proxy-header",
            trusted_proxies=parse_networks(trusted),
            client_cert_header=header,
        ),
    )
    return app, ca


def _header(cert) -> str:
    return ":" + base64.b64encode(cert.cert.public_bytes(Encoding.DER)).decode() + ":"


async def test_client_cert_header_only_from_a_trusted_proxy(tmp_path):
    app, ca = _app(tmp_path, "10.0.0.0/8")
    good = _header(issue(ca, "trailer-01"))
    other = _header(issue(make_ca("other"), "trailer-01"))

    async def get(client_ip: str, header: str | None) -> int:
        transport = httpx.ASGITransport(app=app, client=(client_ip, 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as c:
            headers = {"Client-Cert": header} if header else {}
            return (await c.get("/v1/receipts", headers=headers)).status_code

    assert await get("10.1.2.3", good) == 200
    assert await get("192.168.1.1", good) == 403  # not the proxy: header ignored
    assert await get("10.1.2.3", other) == 403  # not our CA
    assert await get("10.1.2.3", None) == 401
    assert await get("10.1.2.3", "garbage") == 401


async def test_ingress_nginx_url_encoded_pem_header(tmp_path):
    """ingress-nginx passes the verified certificate as ssl-client-cert: URL-encoded PEM."""
    app, ca = _app(tmp_path, "10.0.0.0/8", header="ssl-client-cert")
    pem = issue(ca, "trailer-01").cert.public_bytes(Encoding.PEM)
    good = urllib.parse.quote(pem.decode(), safe="")
    chain = urllib.parse.quote((pem + ca.cert_pem()).decode(), safe="")

    async def get(headers: dict[str, str]) -> int:
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as c:
            return (await c.get("/v1/receipts", headers=headers)).status_code

    assert await get({"ssl-client-cert": good}) == 200
    assert await get({"ssl-client-cert": chain}) == 401  # which certificate? refused
    assert await get({"ssl-client-cert": "-----BEGIN%20junk"}) == 401
    assert await get({"Client-Cert": _header(issue(ca, "trailer-01"))}) == 401  # not the header


def test_access_list_parsing_is_strict():
    listed = AccessList.parse(b'{"allow": ["a"], "revoked_serials": ["00FF"]}')
    assert listed.allow == frozenset({"a"}) and listed.revoked_serials == frozenset({"ff"})
    for bad in (b"[]", b'{"allow": "a"}', b'{"allowed": []}', b"{"):
        try:
            AccessList.parse(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_a_broken_new_list_keeps_the_last_good_one(tmp_path):
    path = tmp_path / "access.json"
    path.write_text('{"allow": ["trailer-01"]}')
    access = AccessListFile(path, 0.0)
    assert access.current().allow == {"trailer-01"}
    path.write_text('{"allow": [')
    assert access.current().allow == {"trailer-01"}
    path.write_text('{"allow": ["trailer-02"]}')
    assert access.current().allow == {"trailer-02"}
