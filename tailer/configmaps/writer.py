"""Audit ConfigMaps: one per tracked object, named in an annotation on the object.

Top half, pure: which objects are tracked, the ConfigMap's name and the size-bounded merge of entries
(the entry itself and its change summary are kube_audit/model/entry.py). Bottom half: ``ConfigMapWriter``,
which batches entries per object and writes them through kube_audit/kube/. It is fed by the projection
that follows the store (projection.py), or, without a store, offered records as a pipeline Observer.

ConfigMap layout: ``data["entries.json"]`` is a JSON list of entries sorted by (time, auditID), one entry
per line. Writers merge by auditID, so two tailer replicas never lose or duplicate an entry.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import heapq
import itertools
import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_never,
    wait_exponential,
    wait_random,
)

from fluent_forward import Record
from kube_audit.contract import ANNOTATION, DATA_KEY, MANAGED_BY, decode_entries, dumps_entry, encode_entries
from kube_audit.kube.aio import AsyncKube
from kube_audit.model.audit import MUTATING_VERBS, EventView, ObjectKey, redact, view
from kube_audit.model.entry import make_entry, state_after
from kube_audit.model.groups import is_custom_group
from kube_audit.model.provenance import makes_version
from kube_audit.model.source import SourceId
from kube_audit.runtime.observability import get_logger
from tailer.errors import Conflict, KubeError, KubeUnconfigured, NotFound, Unavailable
from tailer.metrics import TailerMetrics
from tailer.settings import ConfigMapSettings

MAX_NAME = 253  # DNS-1123 subdomain
MAX_REMEMBERED = 16_384  # objects whose last state (for "2 -> 3") and annotation we remember
LOW_WATER = 500  # free backlog entries before a full backlog says it has room again
MAX_CONCURRENT_WRITES = 8

log = get_logger(component="configmaps")


# --- pure ----------------------------------------------------------------------------------
def is_tracked(key: ObjectKey, track: Sequence[tuple[str, str]] = ()) -> bool:
    """``--track group/resource`` when given, else every custom resource (group not built in)."""
    if track:
        return (key.group, key.resource) in track
    return is_custom_group(key.group)


def configmap_name(resource: str, name: str) -> str:
    """``audit-<resource>-<name>`` as a valid DNS-1123 subdomain; a hash keeps altered names unique."""
    raw = f"audit-{resource}-{name}"
    labels = [re.sub(r"[^a-z0-9-]+", "-", label).strip("-") for label in raw.lower().split(".")]
    clean = ".".join(label for label in labels if label)
    if clean == raw and len(clean) <= MAX_NAME:
        return clean
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return clean[: MAX_NAME - len(digest) - 1].rstrip(".-") + "-" + digest


def merge_entries(existing: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]],
                  max_bytes: int) -> tuple[list[dict[str, Any]], int]:
    """Union by auditID, sorted by (time, auditID), oldest dropped until encoded it fits ``max_bytes``.

    Returns the entries and how many old ones were trimmed.
    """
    by_id = {str(e["auditID"]): e for e in existing}
    for e in new:
        by_id.setdefault(str(e["auditID"]), e)
    entries = sorted(by_id.values(), key=lambda e: (str(e.get("time", "")), str(e["auditID"])))
    sizes = [len(dumps_entry(e).encode()) + 2 for e in entries]  # each line plus ",\n"
    total, drop = 2 + sum(sizes), 0  # "[\n" ... "\n]" minus the last ","
    while total > max_bytes and drop < len(entries):
        total -= sizes[drop]
        drop += 1
    return entries[drop:], drop


def owner_reference(obj: Any) -> dict[str, str] | None:
    """apiVersion, kind, name, uid of an object, when it has them all."""
    if not isinstance(obj, dict) or obj.get("kind") in (None, "Status"):
        return None
    meta = obj.get("metadata") or {}
    ref = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta.get("name"),
           "uid": meta.get("uid")}
    return ref if all(isinstance(v, str) and v for v in ref.values()) else None  # type: ignore[return-value]


def new_configmap(name: str, namespace: str, owner: dict[str, str], entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY),
                         "ownerReferences": [owner]},
            "data": {DATA_KEY: encode_entries(entries)}}


# --- the writer ----------------------------------------------------------------------------
@dataclass
class _Batch:
    key: ObjectKey
    version: str
    owner: dict[str, str] | None = None
    deleted: bool = False
    entries: list[dict[str, Any]] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)  # store sequences of the entries (projection only)


async def connect_writer(settings: ConfigMapSettings, metrics: TailerMetrics) -> ConfigMapWriter | None:
    """The writer when there is a cluster to talk to; else None and one log line saying why."""
    if not settings.enabled:
        log.info("configmaps_off", reason="disabled")
        return None
    try:
        kube = await AsyncKube.connect(settings.kubeconfig)
    except KubeUnconfigured as exc:
        log.warning("configmaps_off", reason="no in-cluster service account and no usable kubeconfig",
                    error=str(exc))
        return None
    log.info("configmaps_on", server=kube.host, service_account=settings.service_account,
             track=[f"{g}/{r}" for g, r in settings.track] or "custom resources")
    return ConfigMapWriter(kube, settings, metrics)


class ConfigMapWriter:
    """``take``/``offer`` never block; ``run`` writes batches at most once per interval.

    ``on_written(seqs)`` is called with the store sequences of entries that are done with: written,
    or given up for good (object gone, a refused write). Entries still pending at shutdown are not
    reported, so the projection reads them again after a restart."""

    name = "configmaps"

    def __init__(self, kube: Any, settings: ConfigMapSettings, metrics: TailerMetrics,
                 retry_initial: float = 0.5, on_written: Callable[[list[int]], None] | None = None) -> None:
        self.kube = kube  # kube_audit.kube.aio.AsyncKube or anything with its methods
        self.settings = settings
        self.metrics = metrics
        self._backoff = wait_exponential(multiplier=retry_initial, max=settings.retry_max_wait) + wait_random(
            0, retry_initial)
        self._pending: dict[ObjectKey, _Batch] = {}
        self._inflight: dict[ObjectKey, asyncio.Task[None]] = {}
        self._due: list[tuple[float, int, ObjectKey]] = []  # heap: when each pending object may be written
        self._order = itertools.count()  # ties in the heap, oldest first
        self._waiting: set[ObjectKey] = set()  # due, but a write of the same object is still in flight
        self._wake = asyncio.Event()  # a write finished or a new object has entries
        self._count = 0  # entries pending or in flight
        self._states: OrderedDict[ObjectKey, dict[str, Any] | None] = OrderedDict()
        self._annotated: OrderedDict[ObjectKey, None] = OrderedDict()
        self._stopping = asyncio.Event()
        self._dropping = False
        self._behind = False
        self._foreign: set[str] = set()  # other clusters whose events were seen (logged once each)
        self.on_written = on_written
        self.room = asyncio.Event()  # set whenever the backlog has room again
        self.room.set()

    # intake (called from the ack path: no awaits, no exceptions out) --------------------------
    def offer(self, records: Sequence[Record], origin: Any = None) -> None:
        """The records of one chunk (without a store), from ``origin`` (tailer.ingest.pipeline.Origin)."""
        if origin is not None and not self.ours(origin.source):
            return
        for record in records:
            if isinstance(record, dict):
                self.take(record)

    def ours(self, source: SourceId) -> bool:
        """Whether an event from ``source`` is of the cluster this tailer runs in (--cluster): other
        clusters' events are stored and served by the API, but never written into this cluster."""
        if source.cluster == self.settings.cluster:
            return True
        if source.cluster not in self._foreign:
            self._foreign.add(source.cluster)
            log.info("configmaps_other_cluster", cluster=source.cluster, ours=self.settings.cluster,
                     source=source.name, note="events of another cluster get no audit ConfigMap here; "
                     "give the tailer the --cluster of the forwarder next to this cluster's apiserver")
        return False

    @property
    def full(self) -> bool:
        return self._count >= self.settings.max_pending

    @property
    def free(self) -> int:
        """Entries that may still be queued before the backlog is full."""
        return max(0, self.settings.max_pending - self._count)

    @property
    def low_water(self) -> int:
        return max(1, min(LOW_WATER, self.settings.max_pending // 10))

    def wants(self, ev: EventView) -> bool:
        return (ev.stage == "ResponseComplete" and ev.verb in MUTATING_VERBS and ev.object is not None
                and ev.user != self.settings.service_account and is_tracked(ev.object, self.settings.track))

    def take(self, record: dict[str, Any], seq: int | None = None) -> bool:
        """Queue the record's entry if it makes one (True); False when it does not or was dropped."""
        ev = view(record)
        if not self.wants(ev):
            return False
        key = ev.object
        assert key is not None
        event = redact(record)  # Secret values never reach a ConfigMap
        before = self._states.get(key)
        after = state_after(event, ev, before)
        entry = make_entry(event, ev, before, after)
        if makes_version(event):  # the same rule as the store's object history (see seed)
            self._remember(self._states, key, after)
        if self._count >= self.settings.max_pending:
            self.metrics.configmap_dropped.labels("backlog_full").inc()
            if not self._dropping:
                self._dropping = True
                log.warning("configmap_backlog_full", pending=self._count, max_pending=self.settings.max_pending)
            return False
        if self._dropping:
            self._dropping = False
            log.info("configmap_backlog_accepting", pending=self._count)
        batch = self._pending.get(key)
        if batch is None:  # written one flush interval after its first entry, to batch what follows
            batch = self._pending[key] = _Batch(key, ev.api_version.rpartition("/")[2])
            heapq.heappush(self._due, (time.monotonic() + self.settings.flush_interval, next(self._order), key))
            self._wake.set()
        batch.entries.append(entry)
        if seq is not None:
            batch.seqs.append(seq)
        for field_name in ("responseObject", "requestObject"):
            batch.owner = batch.owner or owner_reference(event.get(field_name))
        batch.deleted = ev.verb == "delete" and not ev.subresource and (ev.code or 200) < 300
        self._count += 1
        self.metrics.configmap_pending.set(self._count)
        if self.full:
            self.room.clear()
        return True

    @staticmethod
    def _remember(cache: OrderedDict[ObjectKey, Any], key: ObjectKey, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > MAX_REMEMBERED:
            cache.popitem(last=False)

    def knows(self, key: ObjectKey) -> bool:
        """Whether the state before the next entry of ``key`` is known (else ``seed`` it first)."""
        return key in self._states

    def seed(self, key: ObjectKey, history: Sequence[dict[str, Any]]) -> None:
        """The object's state from its stored history (the events before the next one, oldest first)."""
        state: dict[str, Any] | None = None
        for event in history:
            if makes_version(event):
                state = state_after(event, view(event), state)
        self._remember(self._states, key, state)

    # the loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Start each object's write when it is due, keeping MAX_CONCURRENT_WRITES in flight."""
        while not self._stopping.is_set():
            self._wake.clear()
            self._launch(time.monotonic())
            timeout = None
            if self._due and len(self._inflight) < MAX_CONCURRENT_WRITES:
                timeout = max(0.0, self._due[0][0] - time.monotonic())
            try:
                async with asyncio.timeout(timeout):  # asyncio.timeout, not wait_for: see projection._sleep
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _launch(self, now: float, everything: bool = False) -> None:
        due = self._due
        while due and len(self._inflight) < MAX_CONCURRENT_WRITES and (everything or due[0][0] <= now):
            _, _, key = heapq.heappop(due)
            if key not in self._pending:
                continue
            if key in self._inflight:  # at most one write per object at a time: after this one ends
                self._waiting.add(key)
                continue
            batch = self._pending.pop(key)
            task = asyncio.create_task(self._flush(batch), name=f"configmap-write-{key.resource}-{key.name}")
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._forget, key))

    def _forget(self, key: Any, _: object) -> None:
        self._inflight.pop(key, None)
        if key in self._waiting:
            self._waiting.discard(key)
            if key in self._pending:
                heapq.heappush(self._due, (time.monotonic(), next(self._order), key))
        self._wake.set()

    async def stop(self, deadline: float) -> None:
        """Write what is pending (up to ``deadline`` seconds), then cancel and log what was left."""
        self._stopping.set()
        self._wake.set()
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while (self._pending or self._inflight) and loop.time() < end:
            self._launch(time.monotonic(), everything=True)
            if not self._inflight:
                break
            await asyncio.wait(list(self._inflight.values()), timeout=end - loop.time(),
                               return_when=asyncio.FIRST_COMPLETED)
        if self._count:
            log.warning("configmap_entries_abandoned", entries=self._count)
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if hasattr(self.kube, "close"):
            await self.kube.close()

    # one object -----------------------------------------------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Conflict):  # someone else wrote: read again soon, a little apart
            return random.uniform(0, min(0.05 * state.attempt_number, 1.0))
        backoff = self._backoff(state)
        retry_after = getattr(exc, "retry_after", None) or 0.0
        return max(backoff, min(retry_after, 300.0))

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Conflict):
            self.metrics.configmap_writes.labels("conflict").inc()
            return
        self.metrics.configmap_writes.labels("unavailable").inc()
        if not self._behind:
            self._behind = True
            log.warning("configmap_api_unavailable", error=str(exc), pending=self._count)

    async def _flush(self, batch: _Batch) -> None:
        size = len(batch.entries)
        try:
            async for attempt in AsyncRetrying(retry=retry_if_exception_type((Conflict, Unavailable)),
                                               wait=self._wait, stop=stop_never, reraise=True,
                                               before_sleep=self._before_sleep):
                with attempt:
                    size += self._absorb(batch)
                    result = await self._write(batch)
            self.metrics.configmap_writes.labels(result).inc()
            if result == "gone":
                self.metrics.configmap_dropped.labels("gone").inc(len(batch.entries))
            if self._behind:
                self._behind = False
                log.info("configmap_api_recovered", pending=self._count - size)
            self._done(batch)
        except KubeError as exc:
            self.metrics.configmap_writes.labels("error").inc()
            self.metrics.configmap_dropped.labels("error").inc(len(batch.entries))
            log.error("configmap_write_failed", namespace=batch.key.namespace, resource=batch.key.resource,
                      name=batch.key.name, error=str(exc), entries=len(batch.entries))
            self._done(batch)
        except Exception as exc:  # a bug here must not stop the writer
            self.metrics.configmap_writes.labels("error").inc()
            self.metrics.configmap_dropped.labels("error").inc(len(batch.entries))
            log.exception("configmap_write_crashed", name=batch.key.name, error=repr(exc))
            self._done(batch)
        finally:
            self._count -= size
            self.metrics.configmap_pending.set(self._count)
            if self.free >= self.low_water:  # room for a whole read of the projection, not one entry
                self.room.set()

    def _done(self, batch: _Batch) -> None:
        if self.on_written is not None and batch.seqs:
            self.on_written(batch.seqs)

    def _absorb(self, batch: _Batch) -> int:
        """Take entries that arrived for this object while we were retrying."""
        more = self._pending.pop(batch.key, None)
        if more is None:
            return 0
        batch.entries.extend(more.entries)
        batch.seqs.extend(more.seqs)
        batch.owner = batch.owner or more.owner
        batch.deleted = more.deleted
        return len(more.entries)

    async def _write(self, batch: _Batch) -> str:
        key, s = batch.key, self.settings
        namespace = key.namespace or s.cluster_scope_namespace
        name = configmap_name(key.resource, key.name)
        try:
            current: dict[str, Any] | None = await self.kube.get_configmap(namespace, name)
        except NotFound:
            current = None
        if current is None:
            owner = batch.owner or await self._fetch_owner(batch)
            if owner is None:  # the object is gone and left no uid: nothing would clean the ConfigMap up
                return "gone"
            entries, trimmed = merge_entries([], batch.entries, s.max_bytes)
            await self.kube.create_configmap(namespace, new_configmap(name, namespace, owner, entries))
        else:
            existing = decode_entries(current)
            entries, trimmed = merge_entries(existing, batch.entries, s.max_bytes)
            if entries != existing:
                current.setdefault("data", {})[DATA_KEY] = encode_entries(entries)
                await self.kube.replace_configmap(namespace, name, current)
        if trimmed:
            self.metrics.configmap_trimmed.inc(trimmed)
        if not batch.deleted and key not in self._annotated:
            patch = {"metadata": {"annotations": {ANNOTATION: name}}}
            try:
                await self.kube.merge_patch(key.group, batch.version, key.resource, key.namespace, key.name, patch)
            except NotFound:
                pass
            self._remember(self._annotated, key, None)
        return "ok"

    async def _fetch_owner(self, batch: _Batch) -> dict[str, str] | None:
        key = batch.key
        try:
            obj = await self.kube.get(key.group, batch.version, key.resource, key.namespace, key.name)
        except NotFound:
            return None
        if ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION):
            self._remember(self._annotated, key, None)
        return owner_reference(obj)
