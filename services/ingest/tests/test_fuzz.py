"""Hypothesis drives the tus request surface with arbitrary headers, bodies and ids: every
answer is a clear status (never 5xx), the service stays up, and nothing is stored unless
a request was a valid creation."""

from __future__ import annotations

import string

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.kafka

header_text = st.text(alphabet=string.printable.replace("\r", "").replace("\n", ""), max_size=80)
numbers = st.one_of(st.integers(-(10**20), 10**20).map(str), header_text)
TUS_HEADERS = [
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "Upload-Checksum",
    "Content-Type",
    "Upload-Defer-Length",
]


@st.composite
def tus_requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    method = draw(st.sampled_from(["POST", "PATCH", "HEAD", "DELETE", "OPTIONS", "GET"]))
    path = draw(
        st.one_of(
            st.just(""),
            st.text(alphabet=string.ascii_letters + string.digits + "./%-_", max_size=40),
            st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
        )
    )
    headers = {}
    for name in draw(st.lists(st.sampled_from(TUS_HEADERS), unique=True, max_size=6)):
        headers[name] = draw(
            numbers if name.startswith("Upload-L") or name.endswith("Offset") else header_text
        )
    if draw(st.booleans()):
        headers["Tus-Resumable"] = "1.0.0"
    body = draw(st.binary(max_size=2048))
    return method, path, headers, body


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=tus_requests())
def test_arbitrary_tus_requests_get_a_clear_answer(ingest, request):
    method, path, headers, body = request
    s = requests.Session()
    s.cert, s.verify = ingest.pki.cert("trailer-02"), ingest.pki.ca_file
    try:
        rsp = s.request(method, ingest.url + path, headers=headers, data=body, timeout=10)
    except requests.exceptions.InvalidHeader:
        return  # requests itself refuses to send it
    assert rsp.status_code < 500, (method, path, headers, rsp.status_code, rsp.text)
    if rsp.status_code == 201:
        # Only a well-formed creation creates (the metadata strategy cannot make one).
        raise AssertionError(f"created an upload from {headers}")


def test_service_still_healthy_after_fuzzing(ingest):
    assert ingest.ready()
    stored = list((ingest.storage / "uploads").glob("trailer-02/*"))
    # trailer-02 created uploads only in the ownership test (one partial upload).
    assert len(stored) <= 1
