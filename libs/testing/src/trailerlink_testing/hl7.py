"""HL7 v2 over MLLP as a real peer in tests (python-hl7's client and server).

* :func:`send` sends one message with ``hl7.client.MLLPClient`` and returns the ACK text.
* :class:`Hl7Inbox` is the Trust's inbound HL7 endpoint: a python-hl7 MLLP server in a
  thread that keeps what it receives and answers with a chosen acknowledgement code.
  It can be stopped and started again on the same port (an outage).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType

import hl7
from hl7.client import MLLPClient
from hl7.mllp import start_hl7_server

from trailerlink_testing.ports import free_port

START, END = b"\x0b", b"\x1c\x0d"


def unframe(data: bytes) -> bytes:
    return data.lstrip(START).rstrip(b"\r").rstrip(b"\x1c")


def send(host: str, port: int, message: str | bytes, encoding: str = "utf-8") -> str:
    """Send one message and return the acknowledgement (unframed text)."""
    with MLLPClient(host, port, encoding=encoding) as client:
        client.socket.settimeout(30)
        reply = client.send_message(message)
        while not reply.endswith(END):
            more = client.socket.recv(65536)
            if not more:
                break
            reply += more
    return unframe(reply).decode(encoding, "replace")


def ack_code(ack: str) -> str:
    """MSA-1 of an acknowledgement."""
    return str(hl7.parse(ack.replace("\n", "\r")).extract_field("MSA", 1, 1, 1, 1))


class Hl7Inbox:
    """A receiving HL7 application: records messages, ACKs with ``ack`` (AA/AE/AR)."""

    def __init__(self, port: int | None = None, ack: str = "AA") -> None:
        self.port = port or free_port()
        self.ack = ack
        self.received: list[str] = []
        self.on_message: Callable[[str], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._lock = threading.Lock()

    def messages(self) -> list[str]:
        with self._lock:
            return list(self.received)

    async def _client(
        self, reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter
    ) -> None:
        try:
            while True:
                try:
                    message = await reader.readmessage()
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                with self._lock:
                    self.received.append(str(message))
                writer.writemessage(message.create_ack(self.ack))
                await writer.drain()
        finally:
            writer.close()

    def start(self) -> Hl7Inbox:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                start_hl7_server(self._client, "127.0.0.1", self.port, reuse_address=True)
            )
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="hl7-inbox", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("HL7 inbox did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def close() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        loop.close()
        self._loop = None

    def __enter__(self) -> Hl7Inbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
