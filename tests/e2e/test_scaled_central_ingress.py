"""The data centre's other way in (the central chart's ``tlsTermination: ingress``), with
a real TLS-terminating proxy: HAProxy in HTTP mode verifies the trailer's certificate,
passes it to three ingest replicas in the RFC 9440 ``Client-Cert`` header from the one
address they trust, and the trailer's images reach PACS through it. A request that
reaches a replica from anywhere else carries no identity, even with a genuine trailer
certificate in the header."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .conftest import System, _system

WOMEN = 3


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    yield from _system(
        tmp_path_factory.mktemp("e2e-ingress"), WOMEN, ingest_replicas=3, balancer="http"
    )


def test_images_reach_pacs_through_a_tls_terminating_balancer(ingress: System) -> None:
    assert ingress.central.balancer is not None and ingress.central.balancer.mode == "http"
    studies = [ingress.screen(item, seed=71 + n) for n, item in enumerate(ingress.next_women(2))]
    ingress.wait_confirmed(studies)
    acknowledged = dict(ingress.modality.acknowledged)
    assert len(acknowledged) == 8
    ingress.assert_each_exactly_once_byte_identical(acknowledged)
    assert ingress.dead_letters() == (0, 0)


def test_a_client_cert_header_from_outside_the_balancer_is_not_believed(
    ingress: System,
) -> None:
    central = ingress.central
    pem = (central.pki / f"{central.trailer_id}.crt").read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    forged = {"Client-Cert": ":" + base64.b64encode(der).decode() + ":"}
    replica = f"http://127.0.0.1:{central.replica_tus_ports[0]}"
    answer = httpx.get(f"{replica}/v1/receipts", headers=forged, timeout=10)
    assert answer.status_code in (401, 403), answer.text
