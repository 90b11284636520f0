"""Pure line handling: complete lines out of a byte stream, and one line -> a forward entry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson

from fluent_forward import EventTime, encode_entry


@dataclass(frozen=True, slots=True)
class Line:
    data: bytes  # without the line ending
    start: int  # offset of the first byte in the file
    end: int  # offset just past the newline: where the next line starts


@dataclass(slots=True)
class Splitter:
    """Cuts complete lines out of successive reads; never yields half a line.

    A line longer than ``max_bytes`` is not buffered: it is reported once as an oversized
    Line whose ``data`` is only its first ``keep`` bytes, and the rest is skipped up to its newline.
    """

    offset: int  # file offset of the first byte not yet returned as part of a line
    max_bytes: int
    keep: int = 4096
    _buf: bytearray | None = None
    _skipping: bool = False
    _skip_head: bytes = b""
    _skip_start: int = 0

    def feed(self, data: bytes) -> tuple[list[Line], list[Line]]:
        """Returns (lines, oversized lines) completed by ``data``."""
        buf = self._buf if self._buf is not None else bytearray()
        lines: list[Line] = []
        oversized: list[Line] = []
        pos = 0
        n = len(data)
        while pos < n:
            nl = data.find(b"\n", pos)
            if self._skipping:
                if nl < 0:
                    self.offset += n - pos
                    pos = n
                    break
                self.offset += nl + 1 - pos
                oversized.append(Line(self._skip_head, self._skip_start, self.offset))
                self._skipping = False
                pos = nl + 1
                continue
            if nl < 0:
                buf += data[pos:]
                pos = n
                if len(buf) > self.max_bytes:
                    self._start_skipping(buf)
                    buf = bytearray()
                break
            if buf:
                buf += data[pos:nl]
                raw = bytes(buf)
                buf = bytearray()
            else:
                raw = data[pos:nl]
            start = self.offset
            self.offset += len(raw) + 1
            if len(raw) > self.max_bytes:
                oversized.append(Line(raw[: self.keep], start, self.offset))
            else:
                lines.append(Line(raw[:-1] if raw.endswith(b"\r") else raw, start, self.offset))
            pos = nl + 1
        self._buf = buf or None
        return lines, oversized

    def _start_skipping(self, buf: bytearray) -> None:
        self._skipping = True
        self._skip_head = bytes(buf[: self.keep])
        self._skip_start = self.offset
        self.offset += len(buf)

    def pending(self) -> int:
        """Bytes held back waiting for a newline."""
        return len(self._buf or b"")

    def rewind(self) -> int:
        """Drop the partial line held back (it is read again from the file); returns where reading resumes."""
        self._buf = None
        return self.offset

    def finish(self) -> Line | None:
        """At the end of a rotated file: its unterminated last line, if any."""
        if self._skipping:
            self._skipping = False
            return Line(self._skip_head, self._skip_start, self.offset)
        if not self._buf:
            return None
        raw = bytes(self._buf)
        self._buf = None
        start = self.offset
        self.offset += len(raw)
        return Line(raw, start, self.offset)


class BadLine(ValueError):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


_second_cache: list[object] = ["", 0]  # the last "YYYY-MM-DDTHH:MM:SS" seen and its epoch seconds


def event_time(record: dict[str, object], fallback: EventTime) -> EventTime:
    """EventTime from ``stageTimestamp`` (RFC 3339, UTC "Z" as the apiserver writes it)."""
    stamp = record.get("stageTimestamp")
    if not isinstance(stamp, str):
        return fallback
    if len(stamp) >= 20 and stamp[-1] == "Z" and stamp[10] == "T":
        head, frac = stamp[:19], stamp[20:-1] if stamp[19] == "." else ""
        if head == _second_cache[0]:
            seconds = int(_second_cache[1])  # type: ignore[call-overload]
        else:
            try:
                seconds = int(datetime.fromisoformat(head + "+00:00").timestamp())
            except ValueError:
                return fallback
            _second_cache[0], _second_cache[1] = head, seconds
        if (frac.isdigit() or not frac) and 0 <= seconds < 2**32:
            return EventTime(seconds, int((frac + "000000000")[:9]))
    try:
        parsed = datetime.fromisoformat(stamp)
        seconds = int(parsed.timestamp())
    except (ValueError, OverflowError, OSError):
        return fallback
    if not 0 <= seconds < 2**32:  # EventTime carries unsigned 32-bit seconds
        return fallback
    return EventTime(seconds, parsed.microsecond * 1000)


def to_entry(line: bytes, fallback: EventTime) -> bytes:
    """One audit log line -> one packed forward entry (EventTime from stageTimestamp)."""
    return to_timed_entry(line, fallback)[0]


def to_timed_entry(line: bytes, fallback: EventTime) -> tuple[bytes, EventTime]:
    """``to_entry`` and the event's time (the status records' gap time ranges come from it)."""
    if not line.strip():
        raise BadLine("empty", "blank line")
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise BadLine("invalid_json", str(exc)) from None
    if not isinstance(record, dict):
        raise BadLine("not_an_object", f"a JSON {type(record).__name__}, not an object")
    time = event_time(record, fallback)
    return encode_entry(time, record), time
