"""A forward-only byte stream over an iterator of pieces, with taps.

The sealer reads the original object once, from the spool's decrypting iterator, and
never holds more than one piece plus what the caller asks for. Every consumed byte
passes through the taps (SHA-256 of the file and of the dataset, a size counter, the
capture of the DICOM header), so hashing costs no second pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

_SMALL_READ = 64 * 1024


class UnexpectedEnd(EOFError):
    """The stream ended inside something that needs more bytes."""


class ByteStream:
    """Read exact byte counts from an iterator of ``bytes`` pieces of any size.

    ``hashed``: keep the SHA-256 of what is consumed (``file_hash``), as sealing needs for
    the original file. A reader of a container's plaintext passes False: it verifies the
    bytes the records reproduce, and hashing the compressed records too costs a third
    hash per object for nothing.
    """

    def __init__(self, pieces: Iterable[bytes], hashed: bool = True) -> None:
        self._pieces: Iterator[bytes] = iter(pieces)
        self._hashed = hashed
        self._buffer = bytearray()
        self._offset = 0
        self._exhausted = False
        self.position = 0
        self.file_hash = hashlib.sha256()
        self.dataset_hash: hashlib._Hash | None = None
        self.dataset_offset: int | None = None
        self._capture: bytearray | None = None

    # --- buffer management --------------------------------------------------------
    def _available(self) -> int:
        return len(self._buffer) - self._offset

    def _fill(self, wanted: int) -> None:
        """Pull pieces until ``wanted`` bytes are buffered or the source ends."""
        while self._available() < wanted and not self._exhausted:
            try:
                piece = next(self._pieces)
            except StopIteration:
                self._exhausted = True
                break
            if self._offset:
                del self._buffer[: self._offset]
                self._offset = 0
            self._buffer += piece

    def at_end(self) -> bool:
        """True when every byte has been consumed."""
        self._fill(1)
        return self._available() == 0

    def peek(self, n: int) -> bytes:
        """Up to ``n`` next bytes without consuming them."""
        self._fill(n)
        return bytes(self._buffer[self._offset : self._offset + n])

    # --- consuming ---------------------------------------------------------------
    def _consume(self, data: bytes | bytearray | memoryview) -> None:
        if self._hashed:
            self.file_hash.update(data)
        if self.dataset_hash is not None:
            self.dataset_hash.update(data)
        if self._capture is not None:
            self._capture += data
        self.position += len(data)

    def read(self, n: int) -> bytes | bytearray:
        """Consume and return up to ``n`` bytes (fewer only at the end of the stream).

        Large reads come back as a ``bytearray`` (no second copy of a frame).
        """
        if n <= 0:
            return b""
        data: bytes | bytearray
        if self._available() >= n:
            data = bytes(self._buffer[self._offset : self._offset + n])
            self._offset += n
        else:
            parts = bytearray(self._buffer[self._offset :])
            self._buffer.clear()
            self._offset = 0
            while len(parts) < n and not self._exhausted:
                try:
                    piece = next(self._pieces)
                except StopIteration:
                    self._exhausted = True
                    break
                need = n - len(parts)
                if len(piece) <= need:
                    parts += piece
                else:
                    parts += piece[:need]
                    self._buffer += piece[need:]
            # Small reads are element headers and values: give them as hashable bytes.
            data = parts if n >= _SMALL_READ else bytes(parts)
        self._consume(data)
        return data

    def read_exact(self, n: int) -> bytes | bytearray:
        """Consume exactly ``n`` bytes; raises :class:`UnexpectedEnd` if the stream ends."""
        data = self.read(n)
        if len(data) != n:
            raise UnexpectedEnd(
                f"wanted {n} bytes at offset {self.position - len(data)}, "
                f"stream ended after {len(data)}"
            )
        return data

    def iter_rest(self, piece_size: int) -> Iterator[bytes | bytearray]:
        """Consume the rest of the stream in pieces of at most ``piece_size`` bytes."""
        while True:
            data = self.read(piece_size)
            if not data:
                return
            yield data

    # --- taps ---------------------------------------------------------------------
    def mark_dataset_start(self) -> None:
        """From here on, consumed bytes are the dataset (after group 0002)."""
        self.dataset_offset = self.position
        self.dataset_hash = hashlib.sha256()

    def start_capture(self) -> None:
        """Keep a copy of every byte consumed from now on (see :meth:`take_capture`)."""
        self._capture = bytearray()

    def capture_size(self) -> int:
        return len(self._capture) if self._capture is not None else 0

    def take_capture(self) -> bytes:
        """Stop capturing; return what was captured."""
        captured = bytes(self._capture or b"")
        self._capture = None
        return captured
