"""The shaped WAN hop of `make demo LINK=...`: bytes between two processes on 127.0.0.1
really cross the tbf qdisc (the demo's link rate is not a label on an unshaped path),
arrive unchanged, and nothing is left behind."""

from __future__ import annotations

import hashlib
import random
import socket
import subprocess
import threading

import pytest
from trailerlink_testing import shapedwan
from trailerlink_testing.netns import netns_available
from trailerlink_testing.shapedwan import ShapedWan, open_link, parse_rate

needs_tc = pytest.mark.skipif(not netns_available(), reason="needs root with ip and tc")


def test_link_rates_parse_in_tc_units_and_nonsense_is_refused() -> None:
    assert parse_rate("8mbit") == 8_000_000
    assert parse_rate("512kbit") == 512_000
    assert parse_rate("7.6MBIT") == 7_600_000
    for bad in ("8", "8mb", "fast", "0kbit", "-1mbit"):
        with pytest.raises(ValueError, match="link rate"):
            parse_rate(bad)


@needs_tc
def test_bytes_cross_the_tbf_unchanged_and_the_namespace_goes_on_close() -> None:
    payload = random.Random(3).randbytes(300_000)
    digest: list[str] = []
    sink = socket.create_server(("127.0.0.1", 0))

    def receive() -> None:
        conn, _ = sink.accept()
        with conn:
            h, total = hashlib.sha256(), 0
            while total < len(payload) and (data := conn.recv(65536)):
                h.update(data)
                total += len(data)
            digest.append(h.hexdigest())
            conn.sendall(b"ok")

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    with sink, open_link(parse_rate("20mbit"), "20mbit", sink.getsockname()[:2]) as link:
        assert link.shaping == "tc-tbf" and not link.fallback and link.uplink_env == {}
        wan = link.shaper
        assert isinstance(wan, ShapedWan)
        ns = wan.ns
        with socket.create_connection(("127.0.0.1", link.port), timeout=60) as conn:
            conn.sendall(payload)
            assert conn.recv(2) == b"ok"  # the far side has read everything
        receiver.join(60)
        assert digest == [hashlib.sha256(payload).hexdigest()]
        assert wan.shaped_bytes() >= len(payload)  # every byte went through the tbf
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert ns not in listed


def test_without_tc_the_link_falls_back_to_the_proxy_drip_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shapedwan, "netns_available", lambda: False)
    with (
        socket.create_server(("127.0.0.1", 0)) as sink,
        open_link(parse_rate("8mbit"), "8mbit", sink.getsockname()[:2]) as link,
    ):
        assert link.shaping == "proxy-drip" and link.shaper is None
        assert "tc cannot shape here" in link.fallback and "1000 kB/s" in link.fallback
        assert link.uplink_env == {"TRAILERLINK_CONCURRENCY": "1"}
        with socket.create_connection(("127.0.0.1", link.port), timeout=30):
            conn, _ = sink.accept()  # the proxy really forwards to the target
            conn.close()
    with open_link(0, "", ("127.0.0.1", 9)) as none:
        assert none.shaping == "none" and none.port == 0
