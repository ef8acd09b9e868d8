"""A fault-injecting TCP proxy for link tests: cut, stall, slow drip, reset, latency, outage.

It runs its own event loop in a background thread, so synchronous tests, async tests
and service subprocesses can all go through it::

    with FaultProxy(("127.0.0.1", server_port)) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/files/"
        proxy.cut_after(300_000)   # reset every connection once 300 kB went upstream
        proxy.stall()              # hold all data (a dead link that does not say so)
        proxy.unstall()
        proxy.drip(20_000)         # upstream at most 20 kB/s
        proxy.latency(0.03)        # 30 ms added one way, both directions
        proxy.down()               # refuse and reset: the server vanished
        proxy.up()

Also a command line, for use inside a network namespace::

    python -m trailerlink_testing.faultproxy --listen 127.0.0.1:9000 \
        --target 10.0.0.2:8080 --latency 0.03
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct
import threading
import time
from types import TracebackType

_READ = 64 * 1024


class _Conn:
    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server

    def reset(self) -> None:
        for writer in (self.client, self.server):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()


class FaultProxy:
    def __init__(
        self, target: tuple[str, int], listen_host: str = "127.0.0.1", listen_port: int = 0
    ) -> None:
        self.target = target
        self.listen_host = listen_host
        self.port = listen_port
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections_total = 0
        self.cuts = 0
        self._is_down = False
        self._latency = 0.0
        self._drip: float | None = None
        self._cut_after: int | None = None
        self._up_since_arm = 0
        self._conns: set[_Conn] = set()
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None

    # --- control (thread-safe) --------------------------------------------------------
    def _call(self, fn: object, *args: object) -> None:
        self._loop.call_soon_threadsafe(fn, *args)  # type: ignore[arg-type]

    def cut(self) -> None:
        """Reset every open connection now (new connections still work)."""
        self._call(self._reset_all)

    def cut_after(self, nbytes: int) -> None:
        """Reset every open connection once ``nbytes`` more went upstream (once)."""

        def arm() -> None:
            self._cut_after, self._up_since_arm = nbytes, 0

        self._call(arm)

    def down(self) -> None:
        """The server vanishes: reset open connections, refuse new ones."""

        def go() -> None:
            self._is_down = True
            self._reset_all()

        self._call(go)

    def up(self) -> None:
        def go() -> None:
            self._is_down = False

        self._call(go)

    def stall(self) -> None:
        """Stop forwarding in both directions (connections stay open)."""
        self._call(lambda: self._flowing and self._flowing.clear())

    def unstall(self) -> None:
        self._call(lambda: self._flowing and self._flowing.set())

    def drip(self, bytes_per_second: float | None) -> None:
        """Limit upstream (client to server) to this rate; None lifts it."""

        def go() -> None:
            self._drip = bytes_per_second

        self._call(go)

    def latency(self, seconds: float) -> None:
        """Delay everything forwarded by ``seconds`` (each direction)."""

        def go() -> None:
            self._latency = seconds

        self._call(go)

    # --- running ----------------------------------------------------------------------
    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._flowing = asyncio.Event()
            self._flowing.set()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._accept, self.listen_host, self.port)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="faultproxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def close(self) -> None:
        if self._thread is None:
            return

        async def shutdown() -> None:
            self._reset_all()
            if self._server is not None:
                self._server.close()
            me = asyncio.current_task()
            others = [t for t in asyncio.all_tasks() if t is not me]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(10)
        self._thread = None
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- inside the loop --------------------------------------------------------------
    def _reset_all(self) -> None:
        if self._conns:
            self.cuts += 1
        for conn in list(self._conns):
            conn.reset()
        self._conns.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._is_down:
            _Conn(writer, writer).reset()
            return
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _Conn(writer, writer).reset()
            return
        self.connections_total += 1
        conn = _Conn(writer, s_writer)
        self._conns.add(conn)
        try:
            await asyncio.gather(
                self._pump(reader, s_writer, conn, upstream=True),
                self._pump(s_reader, writer, conn, upstream=False),
            )
        finally:
            self._conns.discard(conn)
            for w in (writer, s_writer):
                w.transport.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: _Conn,
        *,
        upstream: bool,
    ) -> None:
        # Bounded, so a slow far side pushes back on the sender as a real path does.
        pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=16)

        async def deliver() -> None:
            while True:
                due, data = await pending.get()
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                assert self._flowing is not None
                await self._flowing.wait()
                if upstream and self._drip:
                    await asyncio.sleep(len(data) / self._drip)
                writer.write(data)
                await writer.drain()
                if upstream:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)

        delivering = asyncio.ensure_future(deliver())
        try:
            while True:
                size = _READ if not (upstream and self._drip) else max(512, int(self._drip / 20))
                data = await reader.read(size)
                if upstream and data and self._cut_after is not None:
                    self._up_since_arm += len(data)
                    if self._up_since_arm >= self._cut_after:
                        self._cut_after = None
                        self._reset_all()
                        return
                await pending.put((time.monotonic() + self._latency, data))
                if not data:
                    break
            await delivering
        except (OSError, asyncio.IncompleteReadError):
            conn.reset()
        finally:
            delivering.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description="fault-injecting TCP proxy")
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds, each direction")
    args = parser.parse_args()
    lhost, lport = args.listen.rsplit(":", 1)
    thost, tport = args.target.rsplit(":", 1)
    proxy = FaultProxy((thost, int(tport)), lhost, int(lport))
    proxy.latency(args.latency)
    proxy.start()
    print(f"listening {lhost}:{proxy.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


if __name__ == "__main__":
    main()
