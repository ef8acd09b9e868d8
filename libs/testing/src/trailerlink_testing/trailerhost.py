"""A trailer's box on a 4G link, for tests that lose the link the way 4G does.

The uplink runs inside a network namespace of its own (the trailer), and reaches the
ingest in this (root) namespace (the data centre) over a veth pair: the *WAN*, shaped
upstream with tc tbf. Taking the trailer's end of the WAN down (:meth:`cut`) is a 4G
bearer vanishing: no FIN, no RST reaches either side, the trailer's kernel sees no
route, the ingest sees a connection that simply stops. :meth:`restore` brings it back,
:meth:`move` gives the trailer a new address (a new site, a new bearer).

The trailer's other services stay in the root namespace next to their broker; a second
veth pair, the *LAN*, never cut, carries the uplink's Kafka traffic (through a relay
pair, so the broker's advertised 127.0.0.1 address works inside the namespace) and its
HTTP port (health, metrics) to the tests::

    with TrailerHost(rate_bits=8_000_000) as host:
        ingest listens on host.wan_server_ip; the uplink's URL is https://<that>:<port>
        host.relay_kafka(broker_port)       # before the uplink starts
        ServiceProcess([*host.run_inside(), "trailerlink-uplink"], env={
            "TRAILERLINK_HTTP_HOST": host.lan_trailer_ip, ...})
        host.cut(); ...; host.restore()

Addresses come from 198.19.<n>.0/24 (RFC 2544's benchmarking range, 198.18.0.0/15,
which these tests use off loopback): the WAN is .0/25 (data centre .1, trailer .2, after
a move .3), the LAN .128/25 (root .129, trailer .130). Needs root (CAP_NET_ADMIN) with
``ip`` and ``tc``; the namespace, both veth pairs and the relays go on close.
"""

from __future__ import annotations

import subprocess
import sys
import time

from trailerlink_testing.faultproxy import FaultProxy
from trailerlink_testing.netns import NetworkFixture, free_test_octet, netns_available, run_ip


class TrailerHost(NetworkFixture):
    def __init__(self, rate_bits: int = 8_000_000, queue_ms: int = 100) -> None:
        import secrets

        tag = secrets.token_hex(3)
        self.ns = f"tlh{tag}"
        self.wan_root_dev, self.wan_dev = f"whr{tag}", f"wht{tag}"
        self.lan_root_dev, self.lan_dev = f"lhr{tag}", f"lht{tag}"
        n = free_test_octet(first=121, last=250, second=19)
        self.wan_server_ip = f"198.19.{n}.1"
        """Where the data centre (the ingest) listens: the root end of the WAN."""
        self.wan_trailer_ip = f"198.19.{n}.2"
        self._moved_ip = f"198.19.{n}.3"
        self.lan_root_ip = f"198.19.{n}.129"
        self.lan_trailer_ip = f"198.19.{n}.130"
        """The trailer's LAN address: its services' HTTP ports are reachable there."""
        self.rate_bits = rate_bits
        self.queue_ms = queue_ms
        self.cuts = 0
        self._ns_up = False
        self._proxies: list[FaultProxy] = []
        self._relays: list[subprocess.Popen[str]] = []

    # --- set-up ---------------------------------------------------------------------
    def start(self) -> TrailerHost:
        if not netns_available():
            raise RuntimeError("needs root (CAP_NET_ADMIN) with ip and tc")
        run_ip("ip", "netns", "add", self.ns)
        self._ns_up = True
        run_ip("ip", "-n", self.ns, "link", "set", "lo", "up")
        for root_dev, dev, root_ip, ip in (
            (self.wan_root_dev, self.wan_dev, self.wan_server_ip, self.wan_trailer_ip),
            (self.lan_root_dev, self.lan_dev, self.lan_root_ip, self.lan_trailer_ip),
        ):
            run_ip(
                "ip", "link", "add", root_dev, "type", "veth", "peer", "name", dev, "netns", self.ns
            )
            run_ip("ip", "addr", "add", f"{root_ip}/25", "dev", root_dev)
            run_ip("ip", "link", "set", root_dev, "up")
            run_ip("ip", "-n", self.ns, "addr", "add", f"{ip}/25", "dev", dev)
            run_ip("ip", "-n", self.ns, "link", "set", dev, "up")
        self.set_rate(self.rate_bits)
        return self

    def set_rate(self, rate_bits: int) -> None:
        """Shape the trailer's upstream (uplink -> ingest) to ``rate_bits`` bit/s."""
        burst = max(32 * 1024, int(rate_bits / 8 / 100))
        run_ip(
            "tc",
            "-n",
            self.ns,
            "qdisc",
            "replace",
            "dev",
            self.wan_dev,
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

    def run_inside(self) -> list[str]:
        """The command prefix that runs a program on the trailer (in the namespace)."""
        return ["ip", "netns", "exec", self.ns]

    def relay_kafka(self, port: int) -> None:
        """Make the broker on 127.0.0.1:``port`` (root) answer on 127.0.0.1:``port``
        inside the trailer too, over the LAN (the broker advertises 127.0.0.1)."""
        entry = FaultProxy(("127.0.0.1", port), listen_host=self.lan_root_ip).start()
        self._proxies.append(entry)
        relay = subprocess.Popen(
            [
                *self.run_inside(),
                sys.executable,
                "-m",
                "trailerlink_testing.faultproxy",
                "--listen",
                f"127.0.0.1:{port}",
                "--target",
                f"{self.lan_root_ip}:{entry.port}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._relays.append(relay)
        assert relay.stdout is not None
        if not relay.stdout.readline().startswith("listening"):
            raise RuntimeError("the Kafka relay inside the trailer did not start")

    # --- the faults -------------------------------------------------------------------
    def cut(self) -> float:
        """The 4G bearer vanishes: the trailer's WAN interface goes down. Returns the
        monotonic time of the cut."""
        run_ip("ip", "-n", self.ns, "link", "set", self.wan_dev, "down")
        self.cuts += 1
        return time.monotonic()

    def restore(self) -> float:
        """The bearer is back (same address unless :meth:`move` ran). Returns the
        monotonic time the link came back."""
        run_ip("ip", "-n", self.ns, "link", "set", self.wan_dev, "up")
        self.set_rate(self.rate_bits)
        return time.monotonic()

    def move(self) -> None:
        """The trailer gets a new WAN address (another site, another bearer): connections
        from the old one are dead and nobody says so."""
        old, self.wan_trailer_ip, self._moved_ip = (
            self.wan_trailer_ip,
            self._moved_ip,
            self.wan_trailer_ip,
        )
        # Old one first: deleting a subnet's primary address takes its secondaries along.
        run_ip("ip", "-n", self.ns, "addr", "del", f"{old}/25", "dev", self.wan_dev)
        run_ip("ip", "-n", self.ns, "addr", "add", f"{self.wan_trailer_ip}/25", "dev", self.wan_dev)

    def connections_to(self, port: int) -> list[str]:
        """Established TCP connections the data centre holds on ``port`` from the
        trailer's addresses (``ss`` lines; the ingest's view of the WAN)."""
        shown = subprocess.run(
            ["ss", "-tnoH", "state", "established", "sport", f"= :{port}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        prefixes = (self.wan_trailer_ip + ":", self._moved_ip + ":")
        return [line for line in shown.splitlines() if any(p in line for p in prefixes)]

    # --- tear-down ----------------------------------------------------------------------
    def close(self) -> None:
        for relay in self._relays:
            relay.kill()
            relay.wait(10)
        self._relays.clear()
        for proxy in self._proxies:
            proxy.close()
        self._proxies.clear()
        if self._ns_up:
            # Deleting the namespace destroys both veth pairs, root ends included.
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)
            self._ns_up = False
