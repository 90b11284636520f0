"""The watch ring: the newest committed events, shared by every watcher of this tailer.

One task (``Ring.run``, started by the first watcher, ended when the last one leaves) reads what the store
committed, by sequence, after each commit (``WatchHub.notify``) or every ``poll`` seconds (other replicas'
writes to a shared PostgreSQL): one store read per commit for all watchers, where each watcher used to
read on its own. Each read becomes a ``Segment`` of rows (the filter columns and the event's JSON bytes).
The ring is complete above ``floor``: every committed event with ``floor < seq <= last`` is in it, so a
watcher whose position is at or above ``floor`` reads the ring only; one below it (it started further
back, or it wrote too slowly and the ring dropped what it had not read) reads the store by sequence, as
every watcher once did, until it is back above ``floor``.

Each segment answers "which of my rows does this filter select" once per distinct filter (a watcher with
the same filter reuses the list): from its rows of the filter's namespace (grouped once per segment: the
column nearly every watch sets), the other columns compared in C (``Segment._candidates``). Each event's
watch line is encoded once per encoding (``Ring.line``), not once per watcher. ``matches`` is what a
filter means, over the named fields in ``FIELDS``: a new filter column is one more line there (and in
``Entry``, which the import checks against it, in EventFilter and in the store's columns).
The ring is bounded by events and by bytes (the JSON, the encoded lines and a per-event estimate of the
Python objects); the oldest segments leave first. Between two wakes of the watchers it waits, so that
commits that come meanwhile are written together, but never so long that the next read would make it
drop what the watchers were not yet woken for (``Ring._gap``).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from bisect import bisect_right
from collections import deque, namedtuple
from collections.abc import Callable, Hashable
from itertools import compress, groupby, repeat
from operator import eq, itemgetter
from typing import Any, NamedTuple

from kube_audit.model.source import SourceId
from kube_audit.runtime.observability import get_logger
from tailer.api.resource import Stored, loads
from tailer.store import EventFilter, Store
from tailer.store.rows import clean

FEED_BATCH = 1000  # rows per store read of the ring
WAKE_EVERY = 0.1  # seconds: while the ring catches up on a large commit, it wakes the watchers this often
# seconds at least between two wakes otherwise: fewer, larger writes to each watcher while commits come
# faster than this (a commit after a quiet spell wakes them at once). 0.5 s against 0.1 s: the API process
# 18-23% less CPU per event under full ingest with 200 watchers (bench/watchers.py, 11 interleaved pairs)
WAKE_GAP = 0.5
GAP_SHARE = 0.6  # of the ring's room, at most, is read after one gap between wakes (Ring._gap)
ENTRY_OVERHEAD = 900  # bytes of Python objects per event beside its JSON and lines (measured: row, strings, lists)
# (EventFilter field, store column) of the equality filters
FIELDS: tuple[tuple[str, str], ...] = (
    ("namespace", "namespace"), ("name", "name"), ("user", "username"), ("resource", "resource"),
    ("verb", "verb"), ("group", "api_group"), ("level", "level"), ("code", "code"),
)
# What the ring keeps of an event: the columns the filters read, where it came from (a SourceId: the
# cluster and source filters compare its names), and the JSON bytes (last)
RingRow = namedtuple("RingRow", ["ts", *dict.fromkeys(column for _, column in FIELDS), "origin", "event"])  # type: ignore[misc]
log = get_logger(component="api")


def wanted(value: Any) -> Any:
    """A filter value as the store compares it (EventFilter.where cleans strings the same way)."""
    return clean(value) if isinstance(value, str) else value


def matches(flt: EventFilter, row: Any) -> bool:
    """Whether the store's filter ``flt`` selects ``row``, as its SQL (EventFilter.where) would."""
    for field, column in FIELDS:
        want = getattr(flt, field)
        if want is not None and getattr(row, column) != wanted(want):
            return False
    if not from_origin(flt, row.origin):
        return False
    return (flt.since is None or row.ts >= flt.since) and (flt.until is None or row.ts < flt.until)


def from_origin(flt: EventFilter, origin: SourceId) -> bool:
    return (flt.cluster is None or origin.cluster == wanted(flt.cluster)) and \
        (flt.source is None or origin.name == wanted(flt.source))


class Entry(NamedTuple):
    """One event of the ring: its sequence and its RingRow, one tuple made straight from the store's row
    (its watch lines are the segment's, ``Segment.lines``)."""

    seq: int
    ts: float
    namespace: str
    name: str
    username: str
    resource: str
    verb: str
    api_group: str
    level: str
    code: int | None
    origin: SourceId
    event: bytes  # the JSON

    def parsed(self) -> dict[str, Any]:
        return loads(self.event)


assert Entry._fields == ("seq", *RingRow._fields), "Entry: the seq, then RingRow's fields"
_AT = {name: i for i, name in enumerate(Entry._fields)}  # an Entry's fields by place (itemgetter: no attribute lookup)
_SEQ = itemgetter(0)


class Plan:
    """What a filter asks of each segment, worked out once per filter (``Ring.plan``), not once per
    segment: the columns it sets, the values it wants there, and whether ``matches`` must still check
    each candidate (a time range, a cluster or a source). Watchers with equal filters
    share one plan, and so each segment's list of their entries."""

    __slots__ = ("__weakref__", "check", "columns", "flt", "namespace", "other", "other_want", "want")

    def __init__(self, flt: EventFilter) -> None:
        fields = [(field, column) for field, column in FIELDS if getattr(flt, field) is not None]
        self.flt = flt
        self.columns = tuple(column for _, column in fields)
        want = tuple(wanted(getattr(flt, field)) for field, _ in fields)
        self.want: Any = want  # the value of each column in ``columns``
        self.namespace: str | None = wanted(flt.namespace) if flt.namespace is not None else None
        # the columns but the namespace, read as one value (a tuple for several), and the value wanted there
        other = [(column, value) for column, value in zip(self.columns, want, strict=True) if column != "namespace"]
        self.other: Callable[[Any], Any] | None = itemgetter(*(_AT[c] for c, _ in other)) if other else None
        self.other_want: Any = tuple(v for _, v in other) if len(other) > 1 else other[0][1] if other else None
        self.check = flt.since is not None or flt.until is not None or flt.cluster is not None or flt.source is not None


class Segment:
    """The rows of one store read: complete in (``after``, ``last``]."""

    __slots__ = ("_matches", "_namespaces", "after", "bytes", "entries", "gone", "last", "lines")

    def __init__(self, after: int, rows: list[tuple[Any, ...]]) -> None:
        """``rows``: (seq, *RingRow) as Store.rows_after reads them."""
        self.after = after
        self.entries: list[Entry] = list(map(Entry._make, rows))
        self.last = self.entries[-1].seq if self.entries else after
        self.bytes = sum(len(e.event) for e in self.entries) + ENTRY_OVERHEAD * len(self.entries)
        self.lines: dict[Hashable, dict[int, bytes]] = {}  # watch lines by encoding, then seq: made on first use
        self.gone = False  # left the ring (its lines no longer count in the ring's bytes)
        self._namespaces: dict[str, list[Entry]] | None = None  # the entries of each namespace: made on first use
        self._matches: dict[Plan, list[Entry]] = {}

    def matching(self, plan: Plan, after: int) -> list[Entry]:
        """The entries ``plan``'s filter selects with seq > ``after``: computed once per plan."""
        found = self._matches.get(plan)
        if found is None:
            found = self._candidates(plan)
            if plan.check:  # (else the columns said all ``matches`` would)
                found = [e for e in found if matches(plan.flt, e)]
            self._matches[plan] = found
        return found if after <= self.after else found[bisect_right(found, after, key=_SEQ):]  # (in seq order)

    def _candidates(self, plan: Plan) -> list[Entry]:
        """The entries equal to the filter on every column it sets (what ``matches`` checks but the time
        range and the origin): those of its namespace, then the other columns compared by ``map`` and
        ``compress``, in C. Once per distinct filter: 200 watches are ~200 filters of ~11 shapes, so an
        index per shape (a loop of bytecode per entry for each) cost more than these scans of C."""
        entries = self.entries
        if plan.namespace is not None:
            if self._namespaces is None:  # sorted is stable: each namespace's entries stay in seq order
                by = itemgetter(_AT["namespace"])
                self._namespaces = {ns: list(group) for ns, group in groupby(sorted(entries, key=by), key=by)}
            entries = self._namespaces.get(plan.namespace, [])
        if plan.other is None:
            return entries
        # (eq, not the wanted value's __eq__: that says NotImplemented, which is true, for another type)
        return list(compress(entries, map(eq, map(plan.other, entries), repeat(plan.other_want))))


class Ring:
    def __init__(self, store: Store, wake: Callable[[], None], feed: asyncio.Event, watchers: Callable[[], int],
                 metrics: Any, poll: float = 1.0, max_events: int = 20_000, max_bytes: int = 64 * 1024**2) -> None:
        self.store, self.wake, self.feed, self.watchers, self.metrics = store, wake, feed, watchers, metrics
        self.poll, self.max_events, self.max_bytes = poll, max_events, max_bytes
        self.segments: deque[Segment] = deque()
        self._plans: weakref.WeakValueDictionary[EventFilter, Plan] = weakref.WeakValueDictionary()
        self.running = False
        self.floor = self.last = self.pruned = self.events = self.bytes = 0
        self._task: asyncio.Task[None] | None = None

    def ensure_running(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="api-watch-ring")

    def stop(self) -> None:
        """Shutdown: the task ends now, not at its next read."""
        if self._task is not None:
            self._task.cancel()

    def plan(self, flt: EventFilter) -> Plan:
        """``flt``'s plan, shared with every watcher of an equal filter while one of them holds it."""
        found = self._plans.get(flt)
        if found is None:
            found = self._plans[flt] = Plan(flt)
        return found

    def after(self, cursor: int) -> list[Segment] | None:
        """The segments above ``cursor``; None when the ring cannot say (not running, or ``cursor`` is
        below ``floor``): then the store must be read."""
        if not self.running or cursor < self.floor:
            return None
        out = []
        for segment in reversed(self.segments):
            if segment.last <= cursor:
                break
            out.append(segment)
        out.reverse()
        return out

    def line(self, segment: Segment, entry: Entry, key: Hashable, make: Callable[[int, Stored, SourceId], bytes]) -> bytes:
        """``entry``'s watch line in the encoding ``key``; made once, then shared by every watcher."""
        made = segment.lines.get(key)
        if made is None:
            made = segment.lines[key] = {}
        found = made.get(entry.seq)
        if found is None:
            found = made[entry.seq] = make(entry.seq, entry.event, entry.origin)  # (its JSON: parsed only if needed)
            if not segment.gone:
                segment.bytes += len(found)
                self.bytes += len(found)
        return found

    async def run(self) -> None:
        try:
            self.floor = self.last = await self.store.head()
            self.pruned = await self.store.pruned()
            self.running = True
            pending, woken = False, time.monotonic()  # pending: appended since the watchers were woken
            while self.watchers():
                self.feed.clear()
                rows = await self.store.rows_after(self.last, FEED_BATCH, RingRow._fields[:-1])
                pruned = await self.store.pruned()  # after the rows, as watchers read it (watch.py)
                if rows or pruned != self.pruned:
                    self.append(rows, pruned)
                    pending = True
                full = len(rows) == FEED_BATCH
                # Catching up on a large commit: wake the watchers at the end (or every WAKE_EVERY
                # seconds), for fewer, larger writes to each of them.
                if pending and (not full or time.monotonic() - woken >= WAKE_EVERY):
                    self.wake()
                    pending, woken = False, time.monotonic()
                    if not full:  # commits that come meanwhile are read (and written) together
                        await self._gap()
                if full:
                    continue
                try:
                    async with asyncio.timeout(self.poll):
                        await self.feed.wait()
                except TimeoutError:
                    pass
        except Exception as exc:  # the store failed: watchers read it themselves (and say so), or restart us
            log.warning("watch_ring_failed", error=str(exc) or type(exc).__name__)
        finally:
            self.clear()
            self._task = None
            self.wake()

    async def _gap(self) -> None:
        """``WAKE_GAP`` after a wake, or less: it ends before the store holds ``GAP_SHARE`` of the ring's room
        beyond what the ring read (looked at every ``WAKE_EVERY``; the rest of the room is for watchers still
        writing the last wake). A gap that brought more would have the ring drop, before the next wake, what
        even a watcher that took the last one whole has not read: at
        ~28,000 events/s a whole 0.5 s brought 14,000 events into the 10,000-event ring, and all 200 watchers
        of bench.watchers fell behind it at once and read the store."""
        end, seen = time.monotonic() + WAKE_GAP, 0
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(WAKE_EVERY, left))
            backlog = await self.store.head() - self.last
            # (and what one more look would bring at the pace of the last: the read after it must fit too)
            if 2 * backlog - seen >= GAP_SHARE * self.room():
                return
            seen = backlog

    def room(self) -> float:
        """How many events the ring holds at most: ``max_events``, or fewer where ``max_bytes`` binds first
        (at the bytes per event it holds now)."""
        if not self.events:
            return self.max_events
        return min(self.max_events, self.max_bytes * self.events / max(self.bytes, 1))

    def append(self, rows: list[tuple[Any, ...]], pruned: int) -> None:
        self.pruned = pruned
        if rows:
            segment = Segment(self.last, rows)
            self.segments.append(segment)
            self.last = segment.last
            self.events += len(segment.entries)
            self.bytes += segment.bytes
        while self.segments and (self.events > self.max_events or self.bytes > self.max_bytes):
            old = self.segments.popleft()
            old.gone = True
            self.floor = old.last
            self.events -= len(old.entries)
            self.bytes -= old.bytes
        self.metrics.watch_ring_events.set(self.events)
        self.metrics.watch_ring_bytes.set(self.bytes)

    def clear(self) -> None:
        self.running = False
        for segment in self.segments:
            segment.gone = True
        self.segments.clear()
        self.events = self.bytes = 0
        self.metrics.watch_ring_events.set(0)
        self.metrics.watch_ring_bytes.set(0)
