"""What the store keeps of an event, and how a query asks for events. Pure: no database here.

A row is the columns the API filters on plus the redacted event as compact JSON, compressed with zstd
and a dictionary (one frame per row: a row must stay readable alone, and a page-level scheme would need
our own page format). Bodies that start with ``{`` are plain JSON (rows written before compression).
"""

from __future__ import annotations

import builtins
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson
import zstandard

from kube_audit.model.audit import AuditEvent, is_dry_run, parse

ZSTD_LEVEL = 3  # with a dictionary ~10x on a 1.5 KB event; higher levels buy little on rows this small
_local = threading.local()


class Row(NamedTuple):
    audit_id: str
    stage: str
    ts: float
    verb: str
    level: str
    username: str
    api_group: str
    resource: str
    namespace: str
    name: str
    subresource: str
    code: int | None
    dry: int  # 1 for a ?dryRun request: it changed nothing
    bytes: int  # length of the event's JSON (what --retention-bytes counts), not of the stored body
    meta: builtins.bytes | None  # JSON {"tag", "metadata"} from the forward protocol; None in the common case
    origin: int  # id of the (cluster, source) it came from in ``audit_origins``: the store sets it (to_row: 0)
    event: builtins.bytes  # the JSON, still uncompressed: the writer compresses (off the event loop); last


COLUMNS = Row._fields


@dataclass(frozen=True)
class EventFilter:
    namespace: str | None = None
    user: str | None = None
    verb: str | None = None
    resource: str | None = None
    group: str | None = None  # None = any group
    name: str | None = None
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive
    level: str | None = None
    code: int | None = None
    cluster: str | None = None  # the forwarder's --cluster ("" = none given, and events stored before issue 12)
    source: str | None = None  # the forwarder's --source-name (else its PING hostname, else its tag)

    def where(self, ph: str) -> tuple[list[str], list[Any]]:
        """SQL conditions with ``ph`` as the driver's placeholder, and their arguments."""
        clauses, args = origin_where(ph, self.cluster, self.source)
        for column, value in (("namespace", self.namespace), ("username", self.user), ("verb", self.verb),
                              ("resource", self.resource), ("api_group", self.group), ("name", self.name),
                              ("level", self.level), ("code", self.code)):
            if value is not None:
                clauses.append(f"{column} = {ph}")
                args.append(clean(value) if isinstance(value, str) else value)
        if self.since is not None:
            clauses.append(f"ts >= {ph}")
            args.append(self.since)
        if self.until is not None:
            clauses.append(f"ts < {ph}")
            args.append(self.until)
        return clauses, args


def origin_where(ph: str, cluster: str | None, source: str | None) -> tuple[list[str], list[Any]]:
    """The condition on ``origin`` for a cluster and/or source name (an unknown name matches nothing)."""
    names = [(column, clean(value)) for column, value in (("cluster", cluster), ("source", source))
             if value is not None]
    if not names:
        return [], []
    inner = " AND ".join(f"{column} = {ph}" for column, _ in names)
    return [f"origin IN (SELECT id FROM audit_origins WHERE {inner})"], [value for _, value in names]


@dataclass(frozen=True)
class InsertResult:
    inserted: int
    duplicates: int
    skipped: int  # records that are not audit events (no auditID or stage)


def parse_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def clean(text: str) -> str:
    """A column value every database takes: PostgreSQL refuses NUL in text and both refuse lone
    surrogates; such a chunk would be refused on every resend. The JSON body keeps the exact value."""
    if text.isascii() and "\x00" not in text:
        return text
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def event_time(event: dict[str, Any]) -> float:
    """stageTimestamp, else requestReceivedTimestamp, else 0: part of the idempotence key, so it must be
    the same for every copy of an event (never the time it arrived)."""
    for field in ("stageTimestamp", "requestReceivedTimestamp"):
        stamp = event.get(field)
        if isinstance(stamp, str) and (t := parse_time(stamp)) is not None:
            return t
    return 0.0


def loads(data: bytes) -> dict[str, Any]:
    """A stored event's JSON, parsed."""
    try:
        return orjson.loads(data)  # type: ignore[no-any-return,unused-ignore]
    except orjson.JSONDecodeError:  # lone surrogates, escaped by the model's dumps fallback
        return json.loads(data)  # type: ignore[no-any-return,unused-ignore]


def to_row(record: Any) -> Row | None:
    """The row of an audit event, parsed once by the pipeline (kube_audit/model/audit.py); a raw record
    is parsed here. None for a record that is not an audit event."""
    ev = record if isinstance(record, AuditEvent) else parse(record)
    if not isinstance(ev, AuditEvent):
        return None
    v = ev.view
    code = v.code if v.code is not None and -(2**63) <= v.code < 2**63 else None  # the column is 64-bit
    # The columns need no ``clean``: parse refuses a NUL in each of these fields and a lone surrogate anywhere.
    return Row(v.audit_id, v.stage, ev.ts if ev.ts is not None else event_time(ev.record), v.verb, v.level, v.user,
               v.group, v.resource, v.namespace, v.name, v.subresource, code, int(is_dry_run(ev.body)), len(ev.json),
               ev.meta, 0, ev.json)


class Codec:
    """Row bodies as zstd frames with a dictionary trained on this store's first events: ~10x on a
    1.5 KB event where a frame alone gets ~2x, and faster. Until there is a dictionary (the first
    ``TRAIN_AFTER`` events of a new store) bodies stay plain JSON. Each frame names its dictionary; the
    dictionaries live in the store (``audit_dicts``) and are never deleted. ``compress`` and ``train``
    run on the writer thread only; ``load`` on any thread."""

    TRAIN_AFTER = 1_000  # sample bodies to train on (~0.5 s of CPU beside the writer)
    DICT_BYTES = 64 * 1024

    def __init__(self, level: int = ZSTD_LEVEL) -> None:
        self.level = level
        self.dicts: dict[int, zstandard.ZstdCompressionDict] = {}
        self.current: int | None = None
        self._compressor: zstandard.ZstdCompressor | None = None
        self._samples: list[bytes] = []

    def use(self, dict_id: int, data: bytes) -> None:
        """Know dictionary ``dict_id``; the newest one known compresses from now on."""
        self.dicts[dict_id] = zstandard.ZstdCompressionDict(data)
        if self.current is None or dict_id > self.current:
            self.current = dict_id
            self._compressor = zstandard.ZstdCompressor(level=self.level, dict_data=self.dicts[dict_id])

    def give_up(self) -> None:
        self.current = 0  # frames without a dictionary (~2x)
        self._compressor = zstandard.ZstdCompressor(level=self.level)

    def wants_training(self, bodies: list[bytes]) -> bool:
        if self.current is not None:
            return False
        self._samples.extend(bodies[: self.TRAIN_AFTER - len(self._samples)])
        return len(self._samples) >= self.TRAIN_AFTER

    def train(self) -> zstandard.ZstdCompressionDict:
        samples, self._samples = self._samples, []
        return zstandard.train_dictionary(self.DICT_BYTES, list[bytes | bytearray | memoryview](samples), level=self.level)

    @staticmethod
    def with_id(trained: zstandard.ZstdCompressionDict, dict_id: int) -> bytes:
        """The dictionary's bytes with its id set to ``dict_id`` (the id in the store): a zstd dictionary
        is magic (4 bytes), id (4 bytes little-endian), then its content."""
        data = trained.as_bytes()
        return bytes(data[:4] + dict_id.to_bytes(4, "little") + data[8:])

    def compress(self, body: bytes) -> bytes:
        return body if self._compressor is None else self._compressor.compress(body)

    def compress_all(self, bodies: list[bytes]) -> list[bytes] | list[bytearray]:
        """``compress`` of each body, the same frames, in one call (``_frames``)."""
        frames = self._frames(bodies)
        if frames is None:
            return bodies
        # bytearrays: sqlite3 binds them directly, where each bytes value first goes through its adapter
        # lookup (an AttributeError raised, formatted and cleared: 4% of the writer thread's instructions)
        return [bytearray(f) for f in frames]

    def compress_joined(self, bodies: list[bytes]) -> tuple[bytes, list[int]]:
        """``compress_all``'s frames end to end in one value, and the length of each (what one INSERT of a
        chunk binds, sqlite.py): the frames are joined from zstd's buffer, not copied out one by one."""
        frames = self._frames(bodies)
        if frames is None:
            return b"".join(bodies), list(map(len, bodies))
        return b"".join(frames), list(map(len, frames))

    def _frames(self, bodies: list[bytes]) -> list[Any] | None:
        """The bodies' frames as buffers in zstd's output, from one call; None when bodies stay plain (no
        dictionary yet) or there are none. One call lets go of the GIL once for them all: one ``compress``
        per body let go of it per body, and beside the busy event loop each time waited for the switch
        interval to take it back: 3.7 µs of work cost ~560 µs (bench/store_e2e.py's writer; measured in
        isolation: 5,000 bodies beside a busy thread, 566 µs each vs 4.6 µs)."""
        if self._compressor is None or not bodies:
            return None
        out = self._compressor.multi_compress_to_buffer(list[bytes | bytearray | memoryview](bodies))
        return [out[i] for i in range(len(bodies))]  # (zstd's segments: buffers, untyped)

    def raw(self, body: bytes | str, fetch: Callable[[int], bytes | None]) -> bytes:
        """The JSON bytes of a stored body, not parsed; ``fetch`` reads a dictionary this process has not
        seen yet."""
        if isinstance(body, str):
            return body.encode()
        if body[:1] == b"{":
            return bytes(body)
        return self._decompressor(zstandard.get_frame_parameters(body).dict_id, fetch).decompress(body)

    def raw_all(self, bodies: Sequence[bytes | str], fetch: Callable[[int], bytes | None]) -> list[bytes]:
        """``raw`` of each body, the frames of each dictionary decompressed in one zstd call (one GIL
        release for them all, as ``compress_all``; a page of 100 rows beside a busy event loop waited for
        the GIL back once per row)."""
        out: list[bytes] = []
        frames: dict[int, tuple[list[int], list[bytes | bytearray | memoryview]]] = {}  # dictionary id -> where, what
        for i, body in enumerate(bodies):
            if isinstance(body, str) or body[:1] == b"{":  # plain JSON (rows from before compression)
                out.append(self.raw(body, fetch))
            else:
                out.append(b"")
                at, data = frames.setdefault(zstandard.get_frame_parameters(body).dict_id, ([], []))
                at.append(i)
                data.append(body)
        for dict_id, (at, data) in frames.items():
            got = self._decompressor(dict_id, fetch).multi_decompress_to_buffer(data)
            for k, i in enumerate(at):
                out[i] = got[k].tobytes()
        return out

    def load_all(self, bodies: Sequence[bytes | str], fetch: Callable[[int], bytes | None]) -> list[dict[str, Any]]:
        """The events of stored bodies (``raw_all``, then each parsed)."""
        return [loads(body) for body in self.raw_all(bodies, fetch)]

    def _decompressor(self, dict_id: int, fetch: Callable[[int], bytes | None]) -> zstandard.ZstdDecompressor:
        cache: dict[int, zstandard.ZstdDecompressor] = getattr(_local, "d", None) or {}
        _local.d = cache  # decompressors are not thread-safe: one per thread and dictionary
        if dict_id not in cache:
            if dict_id and dict_id not in self.dicts:
                data = fetch(dict_id)
                if data is None:
                    raise ValueError(f"stored event needs zstd dictionary {dict_id}, which the store lacks")
                self.dicts.setdefault(dict_id, zstandard.ZstdCompressionDict(data))
            cache[dict_id] = zstandard.ZstdDecompressor(dict_data=self.dicts[dict_id]) if dict_id else \
                zstandard.ZstdDecompressor()
        return cache[dict_id]
