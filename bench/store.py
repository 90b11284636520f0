"""The audit store: insert rate and provenance query latency, SQLite and PostgreSQL.

Insert: synthetic events (bench/synth.py, median ~1 KB, 1% 100 KB) in 1,000-event chunks through
``Store.insert`` (the sink's path: one transaction per chunk, fsync on commit for both databases).
Query: 1,000,000 small Metadata-level events over 100,000 objects, loaded through the same insert path in
10,000-event transactions; one object among them has 50 mutations. We time its versions (store read +
provenance) and an events page filtered by namespace. PostgreSQL runs locally (tests/pgserver.py, fsync on).

    .venv/bin/python bench/store.py [--events 20000] [--rows 1000000] [--only sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.synth import events, free_port  # noqa: E402
from kube_audit.model import provenance  # noqa: E402
from tailer.store import EventFilter, Store  # noqa: E402


def small(i: int) -> dict[str, Any]:
    obj = i % 100_000
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": f"bulk-{i:010d}",
            "stage": "ResponseComplete", "verb": ("get", "list", "update", "patch")[i % 4],
            "requestURI": f"/api/v1/namespaces/ns-{obj % 200}/configmaps/cm-{obj}",
            "user": {"username": f"user-{i % 37}@example.com", "groups": ["system:authenticated"]},
            "objectRef": {"resource": "configmaps", "namespace": f"ns-{obj % 200}", "name": f"cm-{obj}",
                          "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 200},
            "stageTimestamp": f"2026-11-20T{(i // 3_600_000) % 24:02d}:{(i // 60_000) % 60:02d}:"
                              f"{(i // 1000) % 60:02d}.{i % 1000:03d}000Z"}


def target(i: int, n: int) -> dict[str, Any]:
    ev = small(i)
    ev.update(auditID=f"target-{n}", level="RequestResponse", verb="create" if n == 0 else "patch",
              objectRef={"resource": "databases", "apiGroup": "example.com", "namespace": "shop", "name": "orders"})
    ev["requestObject"] = ({"kind": "Database", "spec": {"replicas": 1}} if n == 0 else
                           {"spec": {"replicas": n + 1}} if n % 2 else [{"op": "replace", "path": "/spec/replicas",
                                                                          "value": n + 1}])
    return ev


async def insert_rate(store: Store, n: int) -> tuple[float, float]:
    records = list(events(n))
    size = sum(len(str(r)) for r in records)
    start = time.perf_counter()
    for i in range(0, n, 1000):
        await store.insert(records[i : i + 1000])
    elapsed = time.perf_counter() - start
    return n / elapsed, size / elapsed / 1e6


async def bulk(store: Store, rows: int) -> float:
    start = time.perf_counter()
    every = rows // 50
    batch: list[dict[str, Any]] = []
    for i in range(rows):
        batch.append(target(i, i // every) if i % every == 0 else small(i))
        if len(batch) == 10_000:
            await store.insert(batch)
            batch = []
    if batch:
        await store.insert(batch)
    return rows / (time.perf_counter() - start)


async def timed(fn: Any, runs: int = 30) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def run(kind: str, target_url: str, n: int, rows: int) -> dict[str, Any]:
    store = await Store.open(target_url)
    try:
        rate, mb = await insert_rate(store, n)
        load = await bulk(store, rows)

        async def history() -> None:
            found = await store.object_events("example.com", "databases", "shop", "orders")
            vs = provenance.versions((s, e) for s, _, e in found)
            assert len(vs) == 50 and vs[-1]["complete"], len(vs)

        async def page() -> None:
            assert len(await store.events(EventFilter(namespace="ns-77"), 0, 100)) == 100

        return {"store": kind, "insert_events_per_s": round(rate), "insert_mb_per_s": round(mb, 1),
                "bulk_load_rows_per_s": round(load), "rows": await store.count(),
                "history_ms": round(await timed(history), 2), "events_page_ms": round(await timed(page), 2)}
    finally:
        await store.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "postgresql":
            print(asyncio.run(run("sqlite", str(Path(tmp) / "audit.db"), args.events, args.rows)), flush=True)
        if args.only != "sqlite":
            from tests.helpers.pgserver import PostgresServer

            server = PostgresServer(free_port(), fsync=True).start()
            try:
                print(asyncio.run(run("postgresql", server.new_database(), args.events, args.rows)), flush=True)
            finally:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
