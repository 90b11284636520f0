"""Object views (versions, spechistory, diff, bisect) computed in the API's own process pool.

Rebuilding versions replays up to 5,000 patches and diffs the results: seconds of pure-Python CPU for a
busy object (~23 s for ?limit=5000 of a large object, measured). On the event loop that stalled every ack
meanwhile; in a thread it would still hold the GIL against the loop. So the work runs in worker
*processes* (``QueryPool``): named, bounded (``workers`` running, ``max_pending`` admitted, more answer
429), with a deadline per query (504), and a pool whose worker died is rebuilt (503 for that query).
Workers get the store rows and hand back finished JSON bytes, so the loop neither computes nor encodes.

``object_view`` is pure and importable without aiohttp: it is what a worker runs.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import orjson

from kube_audit.contract import API_VERSION
from kube_audit.model import provenance
from tailer.api.errors import ApiError, bad_request, status, uint

MAX_LIMIT = 5000
VERSIONS_LIMIT = 1000  # default ``limit`` of the object views: versions are rebuilt from the newest events
VIEWS = ("versions", "spechistory", "diff", "bisect")
# kubeprovenance's names for the same views and parameters
VIEW_ALIASES = {"history": "versions"}


def version_number(raw: str | None, default: int, what: str) -> int:
    """``3`` or kubeprovenance's ``v3``; empty means the default."""
    if raw is None or raw == "":
        return default
    return uint(raw[1:] if raw[:1] in ("v", "V") else raw, what, minimum=1)


def object_view(rows: list[tuple[int, str, dict[str, Any]]], omitted: int, ref: dict[str, Any], view: str,
                query: Mapping[str, str], limit: int) -> bytes:
    """The JSON body of one object view; raises ApiError for what the client must change."""
    where = f"{ref['namespace']}/{ref['name']}" if ref["namespace"] else ref["name"]
    what = f"{ref['resource']}{'.' + ref['group'] if ref['group'] else ''} {where}"
    vs = provenance.versions(((s, e) for s, _, e in rows), builtin=provenance.is_builtin_group(ref["group"]),
                             first=omitted + 1)
    if not vs:
        raise ApiError(404, "NotFound", f"no successful changes recorded for {what}")
    meta: dict[str, Any] = {}
    if omitted:
        meta = {"omittedVersions": omitted, "message": f"only the newest {limit} changes were read; "
                f"{omitted} older ones were left out (raise limit, at most {MAX_LIMIT}, to see more)"}
    head = {"apiVersion": API_VERSION, "metadata": meta, "objectRef": ref}
    lo, hi = vs[0]["version"], vs[-1]["version"]
    if view == "versions":
        return orjson.dumps({"kind": "ObjectVersionList", **head, "items": vs})
    if view == "spechistory":
        field = query.get("field") or "spec"
        return orjson.dumps({"kind": "FieldHistory", **head, "field": field,
                             "items": provenance.field_history(vs, field)})
    if view == "diff":
        end = version_number(query.get("end"), hi, "end")
        start = version_number(query.get("start"), max(end - 1, lo), "start")
        if not (lo <= start <= hi and lo <= end <= hi):
            more = f" (older ones left out by limit={limit})" if omitted else ""
            raise bad_request(f"versions of {what} go from {lo} to {hi}{more}")
        a, b = vs[start - lo], vs[end - lo]
        for v in (a, b):
            if not v["complete"]:
                raise ApiError(409, "Conflict", f"version {v['version']} cannot be rebuilt: {v['reason']}")
        return orjson.dumps({"kind": "ObjectDiff", **head, **provenance.diff_versions(a, b, query.get("field", ""))})
    if view == "bisect":
        if not query.get("field") or "value" not in query:
            raise bad_request("bisect needs field and value")
        found = provenance.bisect(vs, query["field"], query["value"])
        if found is None:
            raise ApiError(404, "NotFound", f"no version of {what} has {query['field']} == {query['value']}")
        return orjson.dumps({"kind": "BisectResult", **head, **found})
    raise ApiError(404, "NotFound", f"unknown view {view!r}: {', '.join(VIEWS)}")


def run_object_view(*args: Any) -> tuple[int, bytes]:
    """The worker's entry point: (HTTP code, JSON body); a refusal is a Status, not an exception."""
    try:
        return 200, object_view(*args)
    except ApiError as exc:
        return exc.code, orjson.dumps(status(exc.code, exc.reason, exc.message))


class QueryPool:
    """The API stage's CPU executor: ``workers`` processes, at most ``max_pending`` queries admitted."""

    def __init__(self, workers: int = 2, max_pending: int | None = None, timeout: float = 60.0,
                 metrics: Any = None) -> None:
        self.workers, self.timeout, self.metrics = max(1, workers), timeout, metrics
        self.max_pending = max(self.workers, max_pending if max_pending is not None else 8 * self.workers)
        self._pending = 0
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:  # started on first use: a tailer nobody queries runs no workers
            # spawn, not fork: the tailer has threads (store, sinks) that a fork would copy mid-lock
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def _reject(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.api_query_rejected.labels(reason).inc()

    async def object_view(self, *args: Any) -> tuple[int, bytes]:
        result: tuple[int, bytes] = await self.run(run_object_view, *args)
        return result

    async def run(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in a worker (a module-level function: it is pickled by name)."""
        if self._pending >= self.max_pending:
            self._reject("busy")
            raise ApiError(429, "TooManyRequests", f"{self._pending} queries are being computed; retry later")
        self._pending += 1  # released when the worker is done, not when we stop waiting: the bound holds
        started = time.monotonic()
        try:
            future: Future[Any] = self._executor().submit(fn, *args)
        except BrokenProcessPool:
            self._pending -= 1
            self._broken()
            raise ApiError(503, "ServiceUnavailable", "the query workers were restarted; retry") from None
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._done))
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.wrap_future(future)
        except TimeoutError:
            self._reject("timeout")
            raise ApiError(504, "Timeout", f"the query took longer than {self.timeout:g}s; "
                           "narrow it (object views: limit; verify: since, source)") from None
        except BrokenProcessPool:  # a worker died (OOM killer): rebuild for the next query
            self._broken()
            raise ApiError(503, "ServiceUnavailable", "a query worker died; retry") from None
        finally:
            if self.metrics is not None:
                self.metrics.api_query_seconds.observe(time.monotonic() - started)

    def _done(self) -> None:
        self._pending -= 1

    def _broken(self) -> None:
        self._reject("broken")
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        """Stop now: a worker in the middle of a long replay is terminated, not waited for."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # ProcessPoolExecutor (before 3.14's terminate_workers) has no public way to stop a busy worker,
        # and interpreter exit would wait for it; so terminate the processes it owns.
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(5)
