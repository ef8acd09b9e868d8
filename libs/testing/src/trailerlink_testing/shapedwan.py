"""A tc-shaped WAN hop between two processes on 127.0.0.1 (`make demo LINK=8mbit`).

The services of one site share their broker on 127.0.0.1, so they cannot move into a
namespace of their own (see :mod:`trailerlink_testing.netns`). Instead the WAN bytes
take a detour through one: a veth pair joins this (root) namespace to a new one, the
root side's egress goes through a tbf qdisc, and three relays carry each connection::

    uplink -> 127.0.0.1:port   relay A (root, fault proxy)
           -> 198.19.n.2       veth, shaped by tbf: the upstream bytes pay the rate here
           -> relay B          (inside the namespace, the fault proxy's command line)
           -> 198.19.n.1       veth back, unshaped
           -> relay C          (root, fault proxy) -> the ingest on 127.0.0.1

TLS runs end to end through the relays (they only copy bytes), so the uplink still
verifies the ingest and the ingest the trailer's certificate. The answers flow back
unshaped except for their hop through the root side, which carries a few hundred bytes
per chunk. Needs root with ``ip`` and ``tc``; :class:`ShapingUnavailable` says why not.
Nothing outside the namespace and its veth pair is touched, and both go on close.

:func:`open_link` is what the demo and the e2e benchmark use: the shaped hop, or where
tc cannot shape, the fault proxy's drip at the same rate, saying so.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

from trailerlink_testing.faultproxy import FaultProxy
from trailerlink_testing.netns import free_test_octet, netns_available
from trailerlink_testing.ports import free_port

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(kbit|mbit)\s*$", re.IGNORECASE)


class ShapingUnavailable(RuntimeError):
    """This machine cannot shape a link with tc (no root, no ip/tc, no namespaces)."""


def parse_rate(spec: str) -> int:
    """``8mbit`` / ``512kbit`` / ``7.6mbit`` -> bits per second (tc's units: 1000-based)."""
    found = _RATE.match(spec)
    if not found:
        raise ValueError(f"link rate {spec!r}: expected <n>mbit or <n>kbit, e.g. 8mbit")
    bits = float(found.group(1)) * (1_000_000 if found.group(2).lower() == "mbit" else 1000)
    if bits < 8000:
        raise ValueError(f"link rate {spec!r}: below 8kbit")
    return int(bits)


def _ip(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise ShapingUnavailable(f"`{' '.join(argv)}` failed: {done.stderr.strip()[:200]}")


class ShapedWan:
    """Listen on ``127.0.0.1:port``; forward to ``target`` at most ``rate_bits`` bit/s
    upstream (tbf, as ``ShapedLink.set_rate`` shapes: burst 1/100 s, at least 32 KiB).
    ``start()`` then ``close()`` (which also undoes a half-done start); or :func:`open_link`."""

    def __init__(self, target: tuple[str, int], rate_bits: int) -> None:
        tag = secrets.token_hex(3)
        self.ns = f"tlw{tag}"
        self.root_dev = f"vwr{tag}"
        self.ns_dev = f"vwn{tag}"
        # 198.19.1-120.0/30 (RFC 2544's range; trailerhost uses 121-250)
        n = free_test_octet(first=1, last=120, second=19)
        self.root_ip = f"198.19.{n}.1"
        self.ns_ip = f"198.19.{n}.2"
        self.target = target
        self.rate_bits = rate_bits
        self._entry: FaultProxy | None = None
        self._exit: FaultProxy | None = None
        self._relay: subprocess.Popen[str] | None = None
        self._ns_up = False

    @property
    def port(self) -> int:
        assert self._entry is not None, "not started"
        return self._entry.port

    @property
    def bytes_up(self) -> int:
        """Bytes that went upstream through the shaped hop (TLS records included)."""
        return self._entry.bytes_up if self._entry is not None else 0

    def shaped_bytes(self) -> int:
        """Bytes the tbf qdisc has sent so far (IP packets: headers included)."""
        shown = subprocess.run(
            ["tc", "-s", "qdisc", "show", "dev", self.root_dev],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        found = re.search(r"Sent (\d+) bytes", shown)
        return int(found.group(1)) if found else 0

    def start(self) -> ShapedWan:
        if not netns_available():
            raise ShapingUnavailable("needs root (CAP_NET_ADMIN) with ip and tc")
        _ip("ip", "netns", "add", self.ns)
        self._ns_up = True
        _ip(
            "ip",
            "link",
            "add",
            self.root_dev,
            "type",
            "veth",
            "peer",
            "name",
            self.ns_dev,
            "netns",
            self.ns,
        )
        _ip("ip", "addr", "add", f"{self.root_ip}/30", "dev", self.root_dev)
        _ip("ip", "link", "set", self.root_dev, "up")
        _ip("ip", "-n", self.ns, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_dev)
        _ip("ip", "-n", self.ns, "link", "set", self.ns_dev, "up")
        _ip("ip", "-n", self.ns, "link", "set", "lo", "up")
        burst = max(32 * 1024, int(self.rate_bits / 8 / 100))
        _ip(
            "tc",
            "qdisc",
            "replace",
            "dev",
            self.root_dev,
            "root",
            "tbf",
            "rate",
            f"{self.rate_bits}bit",
            "burst",
            str(burst),
            "latency",
            "100ms",
        )
        self._exit = FaultProxy(self.target, listen_host=self.root_ip).start()
        relay_port = free_port()
        self._relay = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.ns,
                sys.executable,
                "-m",
                "trailerlink_testing.faultproxy",
                "--listen",
                f"{self.ns_ip}:{relay_port}",
                "--target",
                f"{self.root_ip}:{self._exit.port}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._relay.stdout is not None
        if not self._relay.stdout.readline().startswith("listening"):
            raise ShapingUnavailable("the relay inside the namespace did not start")
        self._entry = FaultProxy((self.ns_ip, relay_port)).start()
        return self

    def close(self) -> None:
        for proxy in (self._entry, self._exit):
            if proxy is not None:
                proxy.close()
        self._entry = self._exit = None
        if self._relay is not None:
            self._relay.kill()
            self._relay.wait(10)
            self._relay = None
        if self._ns_up:
            # Deleting the namespace destroys the veth pair, its root side included.
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)
            self._ns_up = False


@dataclass
class Link:
    """The WAN between uplink and ingest as a run uses it (see :func:`open_link`)."""

    spec: str = ""
    bits_per_second: int = 0
    shaping: str = "none"  # tc-tbf | proxy-drip | none
    port: int = 0  # where the uplink connects on 127.0.0.1 (0: straight to the ingest)
    uplink_env: dict[str, str] = field(default_factory=dict)
    shaper: ShapedWan | None = None
    fallback: str = ""  # why tc could not shape, when it could not
    where: str = ""  # how the shaped path runs, when not through ShapedWan

    def describe(self) -> str:
        rate = f"{self.spec} = {self.bits_per_second / 1e6:g} Mbit/s"
        if self.where:
            return f"{rate}, {self.where}"
        if self.shaping == "tc-tbf":
            return f"{rate}, tc tbf on a veth hop through a network namespace"
        if self.shaping == "proxy-drip":
            return f"{rate}, fault-proxy drip (per connection, one upload at a time)"
        return "unshaped (loopback)"


@contextlib.contextmanager
def open_link(bits_per_second: int, spec: str, target: tuple[str, int]) -> Iterator[Link]:
    """The hop to ``target`` (the ingest) at ``bits_per_second``; none when 0.

    tc tbf when this machine allows it. Otherwise the fault proxy's drip at the same
    rate, ``Link.fallback`` saying why; the drip paces each connection on its own, so
    the uplink is told to send one upload at a time (``Link.uplink_env``).
    """
    if not bits_per_second:
        yield Link()
        return
    wan = ShapedWan(target, bits_per_second)
    try:
        wan.start()
    except ShapingUnavailable as exc:
        wan.close()
        reason = (
            f"tc cannot shape here ({exc}); falling back to the fault proxy's drip "
            f"at {bits_per_second / 8 / 1e3:g} kB/s per connection, one upload at a time"
        )
    except BaseException:
        wan.close()
        raise
    else:
        try:
            yield Link(spec, bits_per_second, "tc-tbf", wan.port, shaper=wan)
        finally:
            wan.close()
        return
    with FaultProxy(target) as proxy:
        proxy.drip(bits_per_second / 8)
        yield Link(
            spec,
            bits_per_second,
            "proxy-drip",
            proxy.port,
            uplink_env={"TRAILERLINK_CONCURRENCY": "1"},
            fallback=reason,
        )
