"""Goodput through a link shaped with tc tbf inside network namespaces (client and
server each in a namespace this test creates; nothing outside is touched)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from trailerlink_testing.netns import ShapedLink, netns_available
from trailerlink_testing.tusd import Tusd, tusd_binary

pytestmark = pytest.mark.skipif(
    not netns_available() or tusd_binary() is None, reason="needs root for ip netns/tc, and tusd"
)


def send_through(
    link: ShapedLink, tusd: Tusd, work: Path, sizes: list[int], chunk: int = 256 * 1024
) -> dict[str, float]:
    out = subprocess.run(
        [
            *link.in_client(),
            sys.executable,
            "-m",
            "trailerlink_uplink.sendtool",
            "--url",
            tusd.url,
            "--work",
            str(work),
            "--sizes",
            ",".join(map(str, sizes)),
            "--chunk",
            str(chunk),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_goodput_reaches_the_shaped_rate(tmp_path: Path) -> None:
    rate_bits = 4_000_000
    with ShapedLink(rate_bits=rate_bits) as link:
        with Tusd(
            tmp_path / "tusd",
            host=link.server_ip,
            prefix=link.in_server(),
            log_path=tmp_path / "tusd.log",
        ) as tusd:
            result = send_through(link, tusd, tmp_path / "run", [1_000_000] * 3)
            uploads = tusd.uploads()
    goodput_bits = result["bytes"] * 8 / result["seconds"]
    assert len(uploads) == 3
    assert goodput_bits <= rate_bits * 1.05
    assert goodput_bits >= rate_bits * 0.85, f"goodput {goodput_bits:.0f} bit/s"
