"""Watch streams: one JSON line per event (``{"type": "ADDED", "object": ...}``), as a Kubernetes watch.

Watchers read the shared ring of committed events (ring.py: one store read per commit for all of them,
each event encoded once per encoding) and sleep until the ring took new events or ``poll`` seconds pass.
A watcher below the ring (it resumes from further back, or wrote too slowly while the ring moved on)
reads the store by sequence (``seq > last``), a batch at a time, until it is back in the ring's range:
either way it sees every event after its resourceVersion once, in sequence order. So a watcher holds at
most one batch in memory, and at most ``CATCH_UP`` watchers read the store at once (the others wait their
turn, holding nothing); one that cannot take a batch within ``write_timeout`` is cut off with a final
ERROR line saying where to resume. At most ``max_watchers`` are open at once; more answer 429 with a
Retry-After header.

Like Kubernetes, a watch from a resourceVersion that retention has overtaken (an event above it was
deleted) answers 410 Gone (reason Expired) rather than skipping what is gone; when retention overtakes a
running watcher, its stream ends with an ERROR line carrying the same 410 Status. ``resourceVersion=0``
means "from the oldest event kept".

A stream also ends when its ``timeoutSeconds`` pass (cleanly, as kube-apiserver does), when the
authorization it started with is revoked (re-checked every ``recheck`` seconds: ERROR 403), and when the
tailer shuts down (``WatchHub.close``: every watcher wakes and ends at once, one waiting its turn to read
the store within a ``poll``, so an open watch never holds the shutdown past its deadline).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any

import orjson
from aiohttp import web

from kube_audit.contract import API_VERSION
from kube_audit.model.source import SourceId
from kube_audit.runtime.observability import get_logger
from tailer.api.errors import ApiError, status
from tailer.api.resource import Stored, dump, loads, watch_line
from tailer.api.ring import Plan, Ring, Segment
from tailer.metrics import TailerMetrics
from tailer.store import EventFilter, Store

WATCH_BATCH = 500
WRITE_BYTES = 128 * 1024  # a watcher's lines from the ring per write, at most (about)
CATCH_UP = 8  # watchers reading the store (behind the ring) at once, each holding one batch until written
TURN_HOLD = 1.0  # seconds a watcher writing its batch from the store keeps its turn at most (Watches._write)
BOOKMARK_EVERY = 30.0
RETRY_AFTER = 5  # seconds a refused watcher is asked to wait (Retry-After)
log = get_logger(component="api")
Encode = Callable[[int, Stored, SourceId], bytes]  # (seq, event, where it came from) -> the watched object's JSON


class WatchHub:
    """Wakes the watch ring after the store committed (``notify``), and the watchers after the ring took
    new events (``wake``); each watcher owns one flag, no queue."""

    def __init__(self) -> None:
        self._flags: set[asyncio.Event] = set()
        self.feed = asyncio.Event()  # the ring's: the store committed
        self.closed = False

    def notify(self) -> None:
        self.feed.set()

    def wake(self) -> None:
        for flag in self._flags:
            flag.set()

    def register(self) -> asyncio.Event:
        flag = asyncio.Event()
        self._flags.add(flag)
        return flag

    def unregister(self, flag: asyncio.Event) -> None:
        self._flags.discard(flag)

    def close(self) -> None:
        """Shutdown: every watcher ends its stream now, new watches are refused."""
        self.closed = True
        self.feed.set()
        self.wake()

    def __len__(self) -> int:
        return len(self._flags)


def too_old(rv: int, pruned: int) -> str:
    """Kubernetes' words for a watch that cannot resume (so clients that parse them keep working)."""
    return (f"too old resource version: {rv} ({pruned}); events after it were deleted by retention, "
            "list again and watch from the list's resourceVersion")


def with_rv(seq: int, event: Stored, source: SourceId | None = None) -> bytes:
    return dump({**(loads(event) if isinstance(event, bytes) else event), "metadata": {"resourceVersion": str(seq)}})


class _Turn:
    """One of the ``Watches.catch_up`` permits, given back once."""

    __slots__ = ("_semaphore",)

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore: asyncio.Semaphore | None = semaphore

    def give_back(self) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
            self._semaphore = None


class Watches:
    def __init__(self, store: Store, hub: WatchHub, metrics: TailerMetrics, poll: float = 1.0,
                 write_timeout: float = 10.0, recheck: float = 60.0, max_watchers: int = 500,
                 ring_events: int = 20_000, ring_bytes: int = 64 * 1024**2) -> None:
        self.store, self.hub, self.metrics = store, hub, metrics
        self.poll, self.write_timeout, self.recheck, self.max_watchers = poll, write_timeout, recheck, max_watchers
        self.catch_up = asyncio.Semaphore(CATCH_UP)
        self.ring = Ring(store, hub.wake, hub.feed, lambda: 0 if hub.closed else len(hub), metrics, poll, ring_events, ring_bytes)

    async def serve(self, request: web.Request, flt: EventFilter, rv: int | None, timeout: float | None = None,
                    still_allowed: Callable[[], Awaitable[bool]] | None = None, encode: Encode = with_rv,
                    keep: Callable[[dict[str, Any]], bool] | None = None, bookmarks: bool = True,
                    encoding: Hashable = "rv") -> web.StreamResponse:
        """``encoding`` names ``encode``: watchers with the same one share each event's encoded line."""
        if self.hub.closed:
            raise ApiError(503, "ServiceUnavailable", "the tailer is shutting down")
        if len(self.hub) >= self.max_watchers:
            return self.refuse()
        last = rv if rv is not None else await self.store.head()
        pruned = await self.store.pruned()
        if last and last < pruned:
            raise ApiError(410, "Expired", too_old(last, pruned))
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        flag = self.hub.register()
        self.metrics.watchers.inc()
        log.info("watch_started", resource_version=last, namespace=flt.namespace)
        deadline = time.monotonic() + timeout if timeout else None
        try:
            await self.stream(response, flt, last, flag, pruned, deadline=deadline, still_allowed=still_allowed,
                              gone=lambda: request.transport is None or request.transport.is_closing(),
                              encode=encode, keep=keep, bookmarks=bookmarks, encoding=encoding)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # the store failed, or a bookmark could not be written: end cleanly
            log.error("watch_failed", resource_version=last, error=str(exc) or type(exc).__name__)
            await self.final(response, status(500, "InternalError", f"watch ended: {exc or type(exc).__name__}; "
                                                                     "resume from the last resourceVersion seen"))
        finally:
            self.hub.unregister(flag)
            self.metrics.watchers.dec()
        return response

    def refuse(self) -> web.Response:
        """Too many watchers: 429 with Retry-After, as kube-apiserver's max-in-flight limit answers."""
        self.metrics.watchers_refused.inc()
        log.warning("watch_refused", watchers=len(self.hub), max_watchers=self.max_watchers)
        body = status(429, "TooManyRequests", f"too many watches open ({len(self.hub)}, at most "
                      f"{self.max_watchers}: --watch-max); retry later", retryAfterSeconds=RETRY_AFTER)
        return web.Response(body=orjson.dumps(body), status=429, content_type="application/json",
                            headers={"Retry-After": str(RETRY_AFTER)})

    async def stream(self, response: web.StreamResponse, flt: EventFilter, last: int, flag: asyncio.Event,
                     pruned: int = 0, gone: Callable[[], bool] = lambda: False, deadline: float | None = None,
                     still_allowed: Callable[[], Awaitable[bool]] | None = None, encode: Encode = with_rv,
                     keep: Callable[[dict[str, Any]], bool] | None = None, bookmarks: bool = True,
                     encoding: Hashable = "rv") -> None:
        """``pruned``: the retention mark the watcher started with (what it accepted as gone); ``keep``:
        the part of the filter the store cannot apply; ``bookmarks``: send one every 30 s when quiet."""
        quiet_since = checked = time.monotonic()
        in_ring = False
        plan = self.ring.plan(flt)  # (held for the stream: watchers of an equal filter share it)

        def line(seq: int, event: Stored, source: SourceId) -> bytes:
            return watch_line("ADDED", encode(seq, event, source))

        while not gone():  # aiohttp does not cancel handlers when the client leaves; we look each poll
            if self.hub.closed or (deadline is not None and time.monotonic() >= deadline):
                await self.end(response)
                return
            if still_allowed is not None and time.monotonic() - checked >= self.recheck:
                checked = time.monotonic()
                if await self._revoked(response, still_allowed, last, flt):
                    return
            flag.clear()
            segments = self.ring.after(last)
            turn: _Turn | None = None
            try:
                if segments is None:  # not in the ring (yet, or any more): read the store, in turn
                    self.ring.ensure_running()
                    turn = await self._turn(gone, deadline)
                    if turn is None:  # (none within a poll: look again at what ends the watch or moves it)
                        continue
                    mark, lines, top, full = await self._from_store(flt, last, keep, line, behind=in_ring)
                    in_ring = False
                else:
                    in_ring = True
                    mark, lines, top, full = self._from_ring(segments, plan, last, keep, line, encoding)
                if mark > pruned and mark > last:
                    if turn is not None:
                        turn.give_back()
                    await self.final(response, status(410, "Expired", too_old(last, mark)))
                    self.metrics.watchers_expired.inc()
                    log.warning("watch_expired", resource_version=last, pruned=mark)
                    return
                pruned, last = max(pruned, mark), top
                wrote = bool(lines)
                if lines:
                    data, lines = b"".join(lines), []
                    if not await self._write(response, data, turn):
                        await self.cut_off(response, last)
                        return
                    quiet_since = time.monotonic()
            finally:
                if turn is not None:
                    turn.give_back()
            if full:
                continue
            if not wrote and bookmarks and time.monotonic() - quiet_since > BOOKMARK_EVERY:  # finds gone clients
                await self._bookmark(response, last)
                quiet_since = time.monotonic()
            wait = self._poll_wait(deadline)
            try:
                async with asyncio.timeout(wait):
                    await flag.wait()
            except TimeoutError:
                pass

    def _poll_wait(self, deadline: float | None) -> float:
        """Seconds a stream waits before it looks again: a ``poll``, or what is left until its deadline."""
        return self.poll if deadline is None else max(0.0, min(self.poll, deadline - time.monotonic()))

    async def _turn(self, gone: Callable[[], bool], deadline: float | None) -> _Turn | None:
        """One of the ``catch_up`` turns to read the store; None when none came within a poll (or the watch
        is over), so that the stream looks again at what ends it (the tailer stopping, its deadline, its
        client gone, its authorization revoked) or brings it back into the ring."""
        if self.hub.closed or gone():
            return None
        wait = self._poll_wait(deadline)
        self.metrics.watchers_waiting.inc()
        try:
            async with asyncio.timeout(wait):
                await self.catch_up.acquire()
        except TimeoutError:
            return None
        finally:
            self.metrics.watchers_waiting.dec()
        return _Turn(self.catch_up)

    async def _write(self, response: web.StreamResponse, data: bytes, turn: _Turn | None) -> bool:
        """``data`` written within ``write_timeout``, else False (the client does not read). A watcher
        writing a batch from the store in its turn gives the turn back after ``TURN_HOLD`` seconds of
        writing: a client that reads slowly keeps its own batch waiting, not the other watchers' turns."""
        try:
            if turn is None:
                async with asyncio.timeout(self.write_timeout):
                    await response.write(data)
                return True
            hold = min(TURN_HOLD, self.write_timeout / 2)
            write = asyncio.ensure_future(response.write(data))
            try:
                await asyncio.wait({write}, timeout=hold)
                turn.give_back()
                async with asyncio.timeout(self.write_timeout - hold):
                    await write
            finally:
                write.cancel()  # (done: nothing; else the client did not take it, or this watch was cancelled)
            return True
        except TimeoutError:
            return False

    async def _from_store(self, flt: EventFilter, last: int, keep: Callable[[dict[str, Any]], bool] | None,
                          line: Callable[[int, Stored, SourceId], bytes], behind: bool
                          ) -> tuple[int, list[bytes], int, bool]:
        """(the pruned mark, the lines, the new position, more to read at once) from the store;
        ``behind``: the watcher was in the ring and fell behind it."""
        if behind:
            self.metrics.watchers_behind.inc()
            log.info("watch_behind", resource_version=last, ring_floor=self.ring.floor)
        known = self.ring.last if self.ring.running else None  # committed and visible before our read
        rows: Sequence[tuple[int, Stored, SourceId]]
        kept: Sequence[tuple[int, Stored, SourceId]]
        if keep is None:  # the JSON unparsed: the line splices it
            rows = kept = await self.store.sourced_json(flt, last, WATCH_BATCH)
        else:
            parsed = await self.store.sourced_events(flt, last, WATCH_BATCH)
            rows, kept = parsed, [row for row in parsed if keep(row[1])]
        # Read after the rows: if retention deleted anything above ``last`` since we last looked,
        # these rows may lack it (or it went just after we read: we cannot tell, so we say so too).
        mark = await self.store.pruned()
        full = len(rows) == WATCH_BATCH
        top = rows[-1][0] if rows else last
        if not full and known is not None:  # every match up to ``known`` was in this read: rejoin the ring
            top = max(top, known)
        return mark, [line(*row) for row in kept], top, full

    def _from_ring(self, segments: list[Segment], plan: Plan, last: int,
                   keep: Callable[[dict[str, Any]], bool] | None, line: Callable[[int, Stored, SourceId], bytes],
                   encoding: Hashable) -> tuple[int, list[bytes], int, bool]:
        """The same from the ring: each line made once per encoding, shared with every other watcher. At most
        ``WRITE_BYTES`` (or ``WATCH_BATCH`` lines) per write, the rest at once after it: a watcher whose client
        is slow holds one write's lines (and their copies on the way to the socket) while it waits."""
        lines: list[bytes] = []
        size, top = 0, last
        for segment in segments:
            for entry in segment.matching(plan, top):
                if keep is None or keep(entry.parsed()):
                    made = self.ring.line(segment, entry, encoding, line)
                    lines.append(made)
                    size += len(made)
                    if size >= WRITE_BYTES or len(lines) >= WATCH_BATCH:  # (a place inside the segment)
                        return self.ring.pruned, lines, entry.seq, entry.seq < self.ring.last
            top = segment.last
        return self.ring.pruned, lines, top, top < self.ring.last

    async def _revoked(self, response: web.StreamResponse, still_allowed: Callable[[], Awaitable[bool]], last: int,
                       flt: EventFilter) -> bool:
        """Authorization checked again: when it was revoked, the stream ends with a 403 Status."""
        if await still_allowed():
            return False
        self.metrics.watchers_revoked.inc()
        log.warning("watch_revoked", resource_version=last, namespace=flt.namespace)
        await self.final(response, status(403, "Forbidden", "watch ended: access to these audit events was revoked"))
        return True

    async def _bookmark(self, response: web.StreamResponse, last: int) -> None:
        bookmark = {"type": "BOOKMARK", "object": {"kind": "AuditEvent", "apiVersion": API_VERSION,
                                                   "metadata": {"resourceVersion": str(last)}}}
        async with asyncio.timeout(self.write_timeout):
            await response.write(orjson.dumps(bookmark) + b"\n")

    async def cut_off(self, response: web.StreamResponse, last: int) -> None:
        """The client does not read fast enough: one final line, then close (the rest would only pile up)."""
        self.metrics.watchers_cut_off.inc()
        log.warning("watch_cut_off", resource_version=last, write_timeout=self.write_timeout)
        message = (f"watch closed: the client did not read a batch of events within {self.write_timeout}s; "
                   f"resume with resourceVersion={last}")
        await self.final(response, status(504, "SlowConsumer", message, resourceVersion=str(last)))

    @staticmethod
    async def end(response: web.StreamResponse) -> None:
        try:
            async with asyncio.timeout(1.0):
                await response.write_eof()
        except (TimeoutError, ConnectionError):
            pass

    @classmethod
    async def final(cls, response: web.StreamResponse, error: dict[str, Any]) -> None:
        """One ERROR line ends the stream (as in a Kubernetes watch)."""
        line = orjson.dumps({"type": "ERROR", "object": error}) + b"\n"
        try:
            async with asyncio.timeout(1.0):
                await response.write(line)
        except (TimeoutError, ConnectionError):
            return
        await cls.end(response)
