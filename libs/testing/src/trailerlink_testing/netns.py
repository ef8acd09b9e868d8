"""Bandwidth shaping with tc inside network namespaces this module creates.

Two namespaces joined by a veth pair on test addresses (198.18.<n>.1 and .2, from RFC
2544's benchmarking range 198.18.0.0/15: the only addresses the tests use off loopback);
nothing outside them is touched. The client side's egress goes through a tbf qdisc, so
uploads from the client namespace to the server namespace see the shaped rate (netem
is not available on these kernels; add latency with the fault proxy)::

    with ShapedLink(rate_bits=2_000_000) as link:
        server = Tusd(dir, host=link.server_ip, prefix=link.in_server())
        subprocess.run([*link.in_client(), "python", "upload.py", link.server_ip])

Needs root (CAP_NET_ADMIN); :func:`netns_available` says whether it can work here.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from types import TracebackType
from typing import Self


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def run_ip(*argv: str) -> None:
    """Run an ``ip``/``tc`` command; RuntimeError with its stderr when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {done.stderr.strip()[:200]}")


def netns_available() -> bool:
    """True when this process may create namespaces and shape with tc."""
    return os.geteuid() == 0 and bool(shutil.which("ip")) and bool(shutil.which("tc"))


def free_test_octet(first: int, last: int, second: int = 19) -> int:
    """An ``n`` in ``first..last`` such that no address of this (root) namespace is in
    198.<second>.<n>.0/24 right now: a subnet no other test link of this machine uses."""
    shown = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    used = {int(m) for m in re.findall(rf"inet 198\.{second}\.(\d+)\.", shown)}
    free = [n for n in range(first, last + 1) if n not in used]
    return free[secrets.randbelow(len(free))] if free else first


class NetworkFixture:
    """``with`` support for the namespaces, veths and relays a test sets up: ``start()``
    on entry, ``close()`` however the block ends — also after a half-done start, so a
    failed set-up leaves nothing behind on the host."""

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ShapedLink(NetworkFixture):
    def __init__(
        self, rate_bits: int | None = None, subnet: int | None = None, queue_ms: int = 100
    ) -> None:
        """``queue_ms``: how much traffic tbf queues before dropping, in time at the
        rate (a 4G bearer buffers a few hundred ms; too short a queue drops packets the
        real link would have carried)."""
        tag = secrets.token_hex(3)
        self.client_ns = f"tlc{tag}"
        self.server_ns = f"tls{tag}"
        self.client_dev = f"vc{tag}"
        self.server_dev = f"vs{tag}"
        n = subnet if subnet is not None else 1 + secrets.randbelow(250)
        self.client_ip = f"198.18.{n}.1"
        self.server_ip = f"198.18.{n}.2"
        self.rate_bits = rate_bits
        self.queue_ms = queue_ms
        self._up = False

    def in_client(self) -> list[str]:
        return ["ip", "netns", "exec", self.client_ns]

    def in_server(self) -> list[str]:
        return ["ip", "netns", "exec", self.server_ns]

    def start(self) -> ShapedLink:
        _run("ip", "netns", "add", self.client_ns)
        self._up = True
        _run("ip", "netns", "add", self.server_ns)
        _run(
            "ip",
            "-n",
            self.client_ns,
            "link",
            "add",
            self.client_dev,
            "type",
            "veth",
            "peer",
            "name",
            self.server_dev,
            "netns",
            self.server_ns,
        )
        for ns, dev, ip in (
            (self.client_ns, self.client_dev, self.client_ip),
            (self.server_ns, self.server_dev, self.server_ip),
        ):
            _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        if self.rate_bits:
            self.set_rate(self.rate_bits)
        return self

    def set_rate(self, rate_bits: int) -> None:
        """Shape client→server to ``rate_bits`` bit/s with tbf (replaces the previous)."""
        rate_bytes = rate_bits / 8
        burst = max(32 * 1024, int(rate_bytes / 100))
        _run(
            "ip",
            "netns",
            "exec",
            self.client_ns,
            "tc",
            "qdisc",
            "replace",
            "dev",
            self.client_dev,
            "root",
            "tbf",
            "rate",
            f"{rate_bits}bit",
            "burst",
            str(burst),
            "latency",
            f"{self.queue_ms}ms",
        )
        self.rate_bits = rate_bits

    def shaper_stats(self) -> dict[str, int]:
        """The tbf qdisc's counters on the client side: ``sent_bytes`` (Ethernet frames,
        headers included), ``packets``, ``dropped`` (queue overflow), ``overlimits``."""
        out = subprocess.run(
            ["tc", "-n", self.client_ns, "-s", "qdisc", "show", "dev", self.client_dev],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        match = re.search(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)", out)
        if match is None:
            raise RuntimeError("no qdisc counters on the shaped link")
        sent, packets, dropped, overlimits = (int(g) for g in match.groups())
        return {
            "sent_bytes": sent,
            "packets": packets,
            "dropped": dropped,
            "overlimits": overlimits,
        }

    def set_down(self, down: bool) -> None:
        """Take the link down (carrier lost) or bring it back."""
        _run("ip", "-n", self.client_ns, "link", "set", self.client_dev, "down" if down else "up")

    def close(self) -> None:
        if not self._up:
            return
        for ns in (self.client_ns, self.server_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self._up = False
