"""Pure batching: packed entries -> chunks, each knowing the file position it completes.

A chunk leaves here with its entries field (gzipped when compressing) and no message: the chain
(forwarder/chain.py) seals it, seq and MAC in its option, right before it joins the ack window."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from fluent_forward import EventTime, gzip_compress


@dataclass(slots=True)
class Chunk:
    chunk_id: str
    message: bytes  # the whole forward message once sealed, resent byte for byte
    events: int
    source: Any  # the followed file the events came from
    end: int  # offset just past the last line in the chunk
    source_done: bool = False  # this chunk ends its (rotated) file
    # a marker has no message: it is "acked" as soon as every chunk before it is
    raw_bytes: int = 0
    sent_at: float = 0.0  # monotonic time of the last send
    sent_on: int = -1  # the connection it was last sent on
    next_source: Any = None  # for the chunk ending a file: the file that follows it
    tag: str = ""
    payload: bytes = b""  # the entries field as it goes on the wire (gzipped when compressed); b"": a marker
    compressed: bool = False
    last_time: EventTime | None = None  # the time of its last event
    seq: int = 0  # its place in the chain once sealed (0: no chain)
    mac: bytes = b""
    gap_ids: tuple[str, ...] = ()  # a status chunk: the gaps it reports
    status: bool = False  # a status record: acked like events, never moves a file position


def chunk_id(identity: str, start: int, end: int) -> str:
    """Stable across restarts: the same file range always gets the same id."""
    digest = hashlib.sha256(f"{identity}:{start}:{end}".encode()).digest()[:16]
    return base64.b64encode(digest).decode("ascii")


@dataclass(slots=True)
class Batcher:
    tag: str
    max_events: int
    max_bytes: int
    compress: bool
    compress_level: int = 1
    _parts: list[bytes] = field(default_factory=list)
    _size: int = 0
    _source: Any = None
    _identity: str = ""
    _start: int = 0
    _end: int = 0
    _last_time: EventTime | None = None

    def add(self, source: Any, identity: str, entry: bytes, start: int, end: int,
            time: EventTime | None = None) -> list[Chunk]:
        """Add one entry; returns the chunks it completed (a chunk never spans two files)."""
        out: list[Chunk] = []
        if self._parts and (source is not self._source or self._size + len(entry) > self.max_bytes):
            out.append(self._flush())
        if not self._parts:
            self._source, self._identity, self._start = source, identity, start
        self._parts.append(entry)
        self._size += len(entry)
        self._end = end
        self._last_time = time
        if len(self._parts) >= self.max_events or self._size >= self.max_bytes:
            out.append(self._flush())
        return out

    def advance(self, source: Any, end: int) -> None:
        """Skipped bytes (bad lines) still move the position the next chunk completes."""
        if self._parts and source is self._source:
            self._end = max(self._end, end)

    def empty(self) -> bool:
        return not self._parts

    def flush(self, source_done: bool = False) -> Chunk | None:
        return self._flush(source_done) if self._parts else None

    def _flush(self, source_done: bool = False) -> Chunk:
        payload = b"".join(self._parts)
        cid = chunk_id(self._identity, self._start, self._end)
        field = gzip_compress(payload, self.compress_level) if self.compress else payload
        chunk = Chunk(cid, b"", len(self._parts), self._source, self._end, source_done, len(payload), tag=self.tag,
                      payload=field, compressed=self.compress, last_time=self._last_time)
        self._parts, self._size = [], 0
        return chunk
