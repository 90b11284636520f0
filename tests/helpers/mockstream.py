"""An in-memory duplex stream with the subset of asyncio's StreamReader/StreamWriter that the forward
loops use (read, write, drain, close, wait_closed, get_extra_info), so the tailer's listener and the
forwarder's client run against each other, or against a test, without sockets or processes.

``max_read`` bounds what one ``read`` returns: 1 makes every message arrive byte by byte.
"""

from __future__ import annotations

import asyncio
from typing import Any


class MockReader:
    def __init__(self, max_read: int = 1) -> None:
        self.max_read = max_read
        self._buffer = bytearray()
        self._eof = False
        self._ready = asyncio.Event()

    def feed(self, data: bytes) -> None:
        if data and not self._eof:
            self._buffer += data
            self._ready.set()

    def feed_eof(self) -> None:
        self._eof = True
        self._ready.set()

    async def read(self, n: int = -1) -> bytes:
        while not self._buffer and not self._eof:
            self._ready.clear()
            await self._ready.wait()
        size = len(self._buffer) if n < 0 else n
        out = bytes(self._buffer[: min(size, self.max_read)])
        del self._buffer[: len(out)]
        return out


class MockWriter:
    def __init__(self, peer: MockReader, own: MockReader, name: str) -> None:
        self._peer = peer  # the other side reads what we write
        self._own = own
        self.name = name
        self.written = bytearray()  # everything written, for assertions
        self.closed = False
        self.writes: list[bytes] = []  # one entry per write() call: handshake frames must be single writes

    def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("write on a closed mock stream")
        if data:
            self.written += data
            self.writes.append(bytes(data))
            self._peer.feed(data)

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("drain on a closed mock stream")
        await asyncio.sleep(0)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._peer.feed_eof()  # the peer reads EOF
            self._own.feed_eof()  # and so do we

    def is_closing(self) -> bool:
        return self.closed

    async def wait_closed(self) -> None:
        await asyncio.sleep(0)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.name, 0) if name == "peername" else default


Streams = tuple[MockReader, MockWriter]


def pipe(max_read: int = 1) -> tuple[Streams, Streams]:
    """Two connected ends: what one writes, the other reads (``max_read`` bytes per read at most)."""
    a_in, b_in = MockReader(max_read), MockReader(max_read)
    a = (a_in, MockWriter(b_in, a_in, "client"))
    b = (b_in, MockWriter(a_in, b_in, "server"))
    return a, b
