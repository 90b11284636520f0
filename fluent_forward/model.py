"""Messages of the Fluent forward protocol v1, as plain values.

Spec: "Forward Protocol Specification v1" (fluentd wiki). Nothing here does I/O.
"""

from __future__ import annotations

import struct
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

EVENT_TIME_EXT = 0  # msgpack ext type code of EventTime
_EVENT_TIME = struct.Struct(">II")


@dataclass(frozen=True, order=True, slots=True)
class EventTime:
    """Seconds and nanoseconds since the epoch (msgpack ext type 0, 8 bytes)."""

    seconds: int
    nanoseconds: int = 0

    @classmethod
    def from_float(cls, value: float) -> EventTime:
        seconds = int(value)
        return cls(seconds, int(round((value - seconds) * 1e9)) % 1_000_000_000)

    @classmethod
    def now(cls) -> EventTime:
        ns = _time.time_ns()
        return cls(ns // 1_000_000_000, ns % 1_000_000_000)

    def to_bytes(self) -> bytes:
        return _EVENT_TIME.pack(self.seconds, self.nanoseconds)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> EventTime:
        if len(data) != 8:
            raise ValueError(f"EventTime needs 8 bytes, got {len(data)}")
        seconds, nanos = _EVENT_TIME.unpack(data)
        # One per decoded entry: the slots are set directly, not through the frozen dataclass's __init__
        # (object.__setattr__ per field): 40% less time per EventTime.
        made = object.__new__(cls)
        _SET_SECONDS(made, seconds)
        _SET_NANOSECONDS(made, nanos)
        return made

    def __float__(self) -> float:
        return self.seconds + self.nanoseconds / 1e9


_SET_SECONDS = EventTime.__dict__["seconds"].__set__  # (the slots' descriptors: see from_bytes)
_SET_NANOSECONDS = EventTime.__dict__["nanoseconds"].__set__


Record = dict[str, Any]
Entry = tuple[EventTime, Record]
Metadata = Mapping[str, Any]  # Fluent Bit's per-record metadata map (empty for most inputs)
TimeLike = EventTime | int | float


@dataclass(frozen=True, slots=True)
class Options:
    """The option map that may follow any event-carrying message."""

    size: int | None = None
    chunk: str | None = None
    compressed: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # fluent_signal, metadata, anything else

    @property
    def signal(self) -> int:
        """Fluent Bit's ``fluent_signal``: 0 (or absent) for logs, else metrics or traces."""
        value = self.extra.get("fluent_signal", 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else -1


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Events of one message, whatever mode carried them.

    ``mode`` is one of "message", "forward", "packed", "compressed"; ``wire_bytes`` is the size
    of the message on the wire (before decompression); ``metadata`` holds each entry's metadata
    (``[[time, metadata], record]`` entries, or the ``metadata`` option in Message mode), in the
    order of ``entries``, an empty map where there was none.
    """

    tag: str
    entries: list[Entry]
    options: Options
    mode: str
    wire_bytes: int
    metadata: list[Metadata] = field(default_factory=list)
    payload: bytes | None = None  # PackedForward's entries field exactly as on the wire (still compressed)
    # entries.Numbers of a packed payload (decoder state, not part of the message): may its bytes hold a NaN?
    numbers: Any = field(default=None, compare=False, repr=False)
    # built by a decoder from bytes (decoder state too): every map, array and string of its records is exactly a
    # dict, list or str (no tuple, no subclass), which kube_audit.model.audit.parse may rely on; a batch made
    # by hand is not (False)
    exact: bool = field(default=False, compare=False, repr=False)

    def records(self, hostname: str = "") -> Records:
        return Records(self, hostname)


class Records(list[Record]):
    """The records of one message, as the list the sinks take, with what came beside them: the
    tag, and each record's time and metadata (same order) for a sink that keeps them (the store); the
    options other than size/chunk/compressed, the entries field as sent (``payload``, packed modes only),
    the hostname the peer gave in its PING ("" without shared-key auth), for who sent it, ``finite``
    (decoded from bytes that hold no NaN or infinite float: read once the batch is decoded) and ``exact``."""

    def __init__(self, batch: EventBatch, hostname: str = "") -> None:
        super().__init__(record for _, record in batch.entries)
        self.tag = batch.tag
        self.times = [time for time, _ in batch.entries]
        self.metadata = batch.metadata or [{} for _ in batch.entries]
        self.options = batch.options.extra
        self.payload = batch.payload
        self.hostname = hostname
        # True when the decoder found no NaN or infinite float in the bytes these records were built from
        self.finite = batch.numbers is not None and batch.numbers.finite
        self.exact = batch.exact  # (EventBatch.exact)


@dataclass(frozen=True, slots=True)
class Ack:
    chunk: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A msgpack nil: keeps a connection alive, carries nothing."""


@dataclass(frozen=True, slots=True)
class Helo:
    nonce: bytes
    auth_salt: bytes  # empty when the server does not ask for username/password
    keepalive: bool = True


@dataclass(frozen=True, slots=True)
class Ping:
    hostname: str
    shared_key_salt: bytes
    shared_key_digest: str
    username: str = ""
    password_digest: str = ""


@dataclass(frozen=True, slots=True)
class Pong:
    auth_ok: bool
    reason: str
    hostname: str
    shared_key_digest: str


Message = EventBatch | Ack | Heartbeat | Helo | Ping | Pong
