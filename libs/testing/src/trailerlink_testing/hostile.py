"""Hostile DICOM peers for tests and benchmarks: connections that claim huge PDUs,
drip bytes, or send noise, each from its own loopback address (127.0.0.0/8 is all
local, so every attacker can be a different "host" to the listener's per-peer limits).
"""

from __future__ import annotations

import contextlib
import random
import socket
import statistics
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

FOUR_GIB_CLAIM = 0xFFFFFFFF


def attacker_address(n: int) -> str:
    """The loopback address of attacker ``n`` (never 127.0.0.1, the modality's)."""
    return f"127.0.{100 + n // 250}.{1 + n % 250}"


def _connect(port: int, source: str, timeout: float = 10) -> socket.socket | None:
    try:
        return socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
        )
    except OSError:
        return None


@contextlib.contextmanager
def pdu_claim_flood(
    port: int, connections: int = 50, pdu_type: int = 0x01, claim: int = FOUR_GIB_CLAIM
) -> Iterator[list[socket.socket]]:
    """``connections`` peers each send a PDU header claiming ``claim`` bytes and then
    hold their connection open (silent) until the block ends."""
    socks = []
    header = struct.pack(">BBL", pdu_type, 0, claim)
    for n in range(connections):
        sock = _connect(port, attacker_address(n))
        if sock is None:
            continue
        with contextlib.suppress(OSError):
            sock.sendall(header + b"\x00" * 64)
        socks.append(sock)
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


class _Attack:
    """Attacker threads, started on entering the block and stopped on leaving it."""

    def __init__(self, threads: int) -> None:
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._attack, args=(n,), daemon=True) for n in range(threads)
        ]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _attack(self, n: int) -> None:
        raise NotImplementedError


class Slowloris(_Attack):
    """Peers that send an A-ASSOCIATE-RQ header and then one byte every ``interval``
    seconds, reconnecting whenever they are cut off, until stopped."""

    def __init__(
        self, port: int, connections: int = 10, interval: float = 0.5, first: int = 200
    ) -> None:
        self.port = port
        self.connections = connections
        self.interval = interval
        self.first = first
        self.cut_off = 0
        super().__init__(connections)

    def _attack(self, n: int) -> None:
        while not self._stop.is_set():
            sock = _connect(self.port, attacker_address(self.first + n))
            if sock is None:
                self._stop.wait(self.interval)
                continue
            try:
                sock.sendall(struct.pack(">BBL", 0x01, 0, 200))
                while not self._stop.wait(self.interval):
                    sock.sendall(b"\x00")
            except OSError:
                self.cut_off += 1
            finally:
                sock.close()


def noise(port: int, connections: int, seed: int) -> int:
    """``connections`` peers each send a burst of seeded random bytes and close; returns
    how many could connect."""
    rng = random.Random(seed)
    sent = 0
    for n in range(connections):
        sock = _connect(port, attacker_address(400 + n))
        if sock is None:
            continue
        with contextlib.suppress(OSError):
            sock.sendall(rng.randbytes(rng.choice((1, 6, 7, 64, 1024))))
            sent += 1
        sock.close()
    return sent


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of a process (``VmHWM`` for its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for {pid}")


def echo_seconds(port: int, called: str, calling: str = "MG1", times: int = 9) -> list[float]:
    """Wall time of ``times`` dcmtk echoscu runs (association, C-ECHO, release); fails
    if any echo fails."""
    out = []
    for _ in range(times):
        started = time.perf_counter()
        done = subprocess.run(
            ["echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        out.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise AssertionError(f"C-ECHO failed: {done.stderr[-300:]}")
    return out


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) > 1 else samples[0]


class ContinuousFlood(_Attack):
    """Until stopped, ``workers`` threads keep connecting from ``addresses`` attacker
    addresses and sending a PDU header that claims ``claim`` bytes, each connection held
    until the listener drops it: an attack that lasts as long as the measurement."""

    def __init__(
        self, port: int, addresses: int = 50, workers: int = 4, claim: int = FOUR_GIB_CLAIM
    ) -> None:
        self.port = port
        self.addresses = addresses
        self.claim = claim
        self.workers = workers
        self.connections = 0
        super().__init__(workers)

    def _attack(self, n: int) -> None:
        header = struct.pack(">BBL", 0x01, 0, self.claim)
        workers = self.workers
        while not self._stop.is_set():
            sock = _connect(self.port, attacker_address(n % self.addresses), timeout=5)
            n += workers
            if sock is None:
                continue
            try:
                sock.sendall(header)
                sock.settimeout(5)
                while sock.recv(4096):
                    pass
            except OSError:
                pass
            finally:
                sock.close()
                self.connections += 1
