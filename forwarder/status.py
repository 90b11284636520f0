"""The forwarder's status records (format: kube_audit/model/source.py), sent in-band on STATUS_TAG.

One record every ``--status-interval`` and at once on a change (a gap, a rotation, new bad lines; changes
at most once a second). One status chunk is in the window at a time, a second only to carry gaps the first
does not: a tailer that is away gets the newest state when it is back, not a backlog.

A gap is dated where the reader meets it: a lost file still in the follower's queue (or one known to lie
after a queued file) when the reader passes the end of that file, else at once. ``from`` is the last event
read by then (after a restart: the last acked one), ``to`` the first event read after it. A gap is held
until its ``to`` is known or one interval has passed since it was met (six if the reader never gets
there), then sent in every record until one holding it is acked; its record stays in the checkpoint
until then, so a restart sends it again.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fluent_forward import EventTime, encode_entry, gzip_compress
from kube_audit.model.source import STATUS_TAG, GapReport, SourceId, Status, parse_status

from .batcher import Chunk
from .source import Gap

MAX_GAPS = 500  # per record (the format allows 1000); older pending gaps go first
CHANGE_SPACING = 1.0  # seconds between records sent for a change


def _version() -> str:
    try:
        return version("kube-audit-forwarder")
    except PackageNotFoundError:
        return "unknown"


def rfc3339(t: EventTime | float) -> str:
    if isinstance(t, EventTime):
        seconds, micros = t.seconds, t.nanoseconds // 1000
    else:
        seconds, micros = int(t), int((t % 1) * 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"


def gap_id(gap: Gap) -> str:
    """Stable across restarts: the same loss found again gets the same id."""
    text = f"{gap.fingerprint}:{gap.path}:{gap.inode}:{gap.bytes_lost}:{gap.reason}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def gap_reason(gap: Gap) -> str:
    """The follower's words -> one of source.GAP_REASONS."""
    text = gap.reason
    if text.startswith("the checkpointed file is gone"):
        return "pruned_while_down"
    if "truncat" in text or "between the copy" in text:
        return "truncated"
    if "deleted" in text or "rotated away" in text:
        return "rotated_unread"
    return "unknown"


@dataclass(slots=True)
class _Pending:
    report: GapReport
    found_at: float  # monotonic: when found, then when the reader met it
    waiting: bool  # its end (the first event after it) is not known yet
    after: Any = None  # the queued file it follows (None: met at once)
    met: bool = True  # the reader has passed ``after``


class StatusBook:
    def __init__(self, source: SourceId, interval: float, compress: bool) -> None:
        self.source = source
        self.interval = interval  # 0: no status records
        self.compress = compress
        self.version = _version()
        self.start_time = rfc3339(time.time())
        self.read = self.sent = self.acked = 0
        self.bad_lines: dict[str, int] = {}
        self.last_time: EventTime | None = None  # the last event read
        self.last_text: str | None = None  # the same as RFC 3339, from the checkpoint until an event is read
        self._gaps: dict[str, _Pending] = {}
        self.wanted = True  # a change (or the start) calls for a record
        self.inflight = 0  # status chunks sent and not acked
        self._sending: set[str] = set()  # the gaps in them
        self.last_sent = -1e9  # monotonic

    @property
    def on(self) -> bool:
        return self.interval > 0

    # ---- what happens -------------------------------------------------------------------------

    def load(self, last_event_time: str, gaps: tuple[dict[str, Any], ...]) -> None:
        """From the checkpoint: the last acked event's time, and gaps found but not yet acked."""
        self.last_text = last_event_time or None
        for raw in gaps if self.on else ():  # without status records nobody would ever ack them
            try:
                report = parse_status({"kind": "ForwarderStatus", "source": "-", "gaps": [raw]}).gaps[0]
            except ValueError:
                continue  # a damaged record: it was logged when it was found
            self._gaps[report.id] = _Pending(report, time.monotonic(), False)  # sent again as it was

    def found(self, gap: Gap) -> str:
        """A gap; dated now, or when the reader passes the file it follows."""
        gid = gap_id(gap)
        if gid not in self._gaps and self.on:
            start = None if gap.after is not None else self._now_text()
            report = GapReport(gid, gap.path, gap.inode, gap.bytes_lost, gap_reason(gap), gap.exact, start, None)
            self._gaps[gid] = _Pending(report, time.monotonic(), True, gap.after, gap.after is None)
            while len(self._gaps) > 4 * MAX_GAPS:  # a bound on memory and checkpoint: the oldest go
                self._gaps.pop(next(iter(self._gaps)))
        return gid

    def _now_text(self) -> str | None:
        return rfc3339(self.last_time) if self.last_time is not None else self.last_text

    def passed(self, source: Any) -> None:
        """The reader is done with ``source``: the gaps after it start at the last event read."""
        for p in self._gaps.values():
            if not p.met and p.after is source:
                p.report, p.met, p.found_at = replace(p.report, start=self._now_text()), True, time.monotonic()

    def events(self, n: int, first: EventTime | None, last: EventTime | None) -> None:
        """``n`` events read, the first and last of them at these times."""
        self.read += n
        if first is None or last is None:
            return
        self.last_time = last
        waiting = [p for p in self._gaps.values() if p.waiting and p.met]
        if waiting:
            end = rfc3339(first)
            for p in waiting:
                p.report, p.waiting = replace(p.report, end=end), False
            self.wanted = True

    def bad(self, kind: str) -> None:
        self.bad_lines[kind] = self.bad_lines.get(kind, 0) + 1
        self.wanted = True

    # ---- when to send -------------------------------------------------------------------------

    def _due(self, p: _Pending) -> float:
        return p.found_at + self.interval * (1 if p.met else 6)

    def _ready(self, now: float) -> list[GapReport]:
        return [p.report for p in self._gaps.values() if not p.waiting or now >= self._due(p)]

    def wait(self, now: float) -> float | None:
        """Seconds until a record is due (0: now); None while one is in flight."""
        spacing = self.last_sent + min(CHANGE_SPACING, self.interval)
        if self.inflight:
            fresh = self.inflight < 2 and any(r.id not in self._sending for r in self._ready(now))
            return max(0.0, spacing - now) if fresh else None
        due = self.last_sent + self.interval
        changed = self.wanted or any(not p.waiting for p in self._gaps.values())
        if changed:
            due = min(due, spacing)
        waiting = [self._due(p) for p in self._gaps.values() if p.waiting]
        if waiting:
            due = min(due, max(min(waiting), spacing))
        return max(0.0, due - now)

    def chunk(self, file: str, inode: int, offset: int, lag: int, rotations: int) -> Chunk:
        """The next record as a chunk (to be sealed and submitted); marks it in flight."""
        now = time.monotonic()
        gaps = tuple(self._ready(now)[:MAX_GAPS])
        status = Status(self.source, self.version, self.start_time, rfc3339(time.time()), file, inode, offset, lag,
                        rotations, self.read, self.sent, self.acked, dict(self.bad_lines), gaps)
        payload = encode_entry(EventTime.now(), status.to_record())
        field = gzip_compress(payload, 1) if self.compress else payload
        chunk_id = base64.b64encode(os.urandom(16)).decode("ascii")
        self.inflight, self.wanted, self.last_sent = self.inflight + 1, False, now
        self._sending.update(g.id for g in gaps)
        return Chunk(chunk_id, b"", 1, None, 0, raw_bytes=len(payload), tag=STATUS_TAG, payload=field,
                     compressed=self.compress, gap_ids=tuple(g.id for g in gaps), status=True)

    def acked_record(self, chunk: Chunk) -> None:
        for gid in chunk.gap_ids:
            self._gaps.pop(gid, None)
            self._sending.discard(gid)
        self.inflight = max(0, self.inflight - 1)

    def pending_records(self) -> tuple[dict[str, Any], ...]:
        """For the checkpoint: gaps found and not yet acked."""
        return tuple(p.report.to_record() for p in self._gaps.values())
