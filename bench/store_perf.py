"""The store rows of issue 13, before and after, on realistic events (bench/events.py), side by side.

The driver runs each case in a fresh worker process, once per code tree (``--before``: a git revision,
unpacked to a temporary folder; ``after``: this tree), interleaved ``--runs`` times, and prints the medians
next to each other and next to each case's own baseline measured in the same worker:

- insert: ``Store.insert`` (1,000-event chunks, one commit each; after 2,000 warm-up events, so the store
  has trained its zstd dictionary) vs a minimal sqlite3 loop (the same events
  as JSON, one table with no secondary index, WAL, synchronous=FULL, one transaction per chunk).
- commits: the wait of each chunk's commit (``Store.insert`` of 1,000 parsed events, one after another, 150
  chunks into a new store): p50, p99 and the longest, as an ack waits for it.
- large (``--rows``): retention with nothing to delete; a time-range list (the last 10 minutes, one page);
  a cheap call (``head``) alone and while an unindexed scan runs; bytes on disk per event vs its JSON; a real
  prune of the oldest 10% while chunks keep arriving: the longest wait of one chunk's commit.
- postgresql: insert rate, CPU per event (the process and its PostgreSQL writer backend) and bytes per
  event (table + indexes + TOAST) on a local server.
- pgprune (``--rows``): the same prune of the oldest 10% while chunks arrive, on a local PostgreSQL.

    python -m bench.store_perf [--rows 1000000] [--runs 3] [--before 8a254db] [--cases insert,commits,large,postgresql,pgprune]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
GOALS = {"insert_ratio": ">= 0.8", "commit_max_ms": "<= 250", "retention_noop_ms": "< 10", "range_ms": "< 50", "prune10_max_wait_ms": "<= 250", "pg_prune10_max_wait_ms": "<= 250",
         "cheap_behind_scan_ms": "~ alone", "disk_per_json": "<= 1.0", "pg_disk_per_json": "<= 1.0"}


# ---- worker: runs inside one code tree (sys.path[0] is that tree) ----

async def timed(fn: Any, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def minimal_loop(path: str, chunks: list[list[dict[str, Any]]]) -> float:
    import orjson

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, event TEXT NOT NULL)")
    start = time.perf_counter()
    for chunk in chunks:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t (ts, event) VALUES (?, ?)",
                         [(e["stageTimestamp"], orjson.dumps(e).decode()) for e in chunk])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return sum(map(len, chunks)) / elapsed


async def insert_rate(store: Any, chunks: list[list[dict[str, Any]]]) -> float:
    start = time.perf_counter()
    for chunk in chunks:
        await store.insert(chunk)
    return sum(map(len, chunks)) / (time.perf_counter() - start)


async def case_insert(tmp: Path, n: int) -> dict[str, Any]:
    from bench.events import events
    from tailer.store import Store

    records = list(events(n, seed=3))
    chunks = [records[i:i + 1000] for i in range(0, n, 1000)]
    loop = minimal_loop(str(tmp / "loop.db"), chunks)
    store = await Store.open(str(tmp / "audit.db"))
    try:
        await insert_rate(store, [list(events(2000, seed=4))])  # steady state: a store that has its dictionary
        for _ in range(100):
            if getattr(store, "_training", None) is None:
                break
            await asyncio.sleep(0.1)
            await store.insert(list(events(1, seed=5)))
        ours = await insert_rate(store, chunks)
    finally:
        await store.close()
    return {"insert_eps": round(ours), "minimal_loop_eps": round(loop), "insert_ratio": round(ours / loop, 2)}


async def case_commits(tmp: Path, n: int) -> dict[str, Any]:
    from bench.events import many
    from tailer.store import Store

    fresh = many(10**9, seed=7)
    chunks = [parsed([next(fresh) for _ in range(1000)]) for _ in range(155)]
    store = await Store.open(str(tmp / "audit.db"))
    waits = []
    try:
        for chunk in chunks:
            t = time.perf_counter()
            await store.insert(chunk)
            waits.append(time.perf_counter() - t)
    finally:
        await store.close()
    waits = sorted(waits[5:])  # after the first few (the dictionary's training)
    return {"commit_p50_ms": round(waits[len(waits) // 2] * 1000, 1),
            "commit_p99_ms": round(waits[int(0.99 * (len(waits) - 1))] * 1000, 1),
            "commit_max_ms": round(waits[-1] * 1000, 1)}


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def load(store: Any, rows: int, rate: float) -> tuple[float, int]:
    """``rows`` events through ``Store.insert`` in 5,000-event chunks: (events/s, bytes of their JSON, sampled)."""
    import orjson

    from bench.events import many

    json_bytes, batch, start = 0, [], time.perf_counter()
    for ev in many(rows, rate=rate):
        batch.append(ev)
        if len(batch) == 5000:
            json_bytes += sum(len(orjson.dumps(e)) for e in batch[:50]) * 100  # sampled
            await store.insert(batch)
            batch = []
    if batch:
        await store.insert(batch)
    return rows / (time.perf_counter() - start), json_bytes


async def case_large(tmp: Path, rows: int) -> dict[str, Any]:
    from bench.events import START
    from tailer.store import EventFilter, Store

    path = tmp / "audit.db"
    store = await Store.open(str(path))
    rate = 500.0
    try:
        load_eps, json_bytes = await load(store, rows, rate)
        end = START.timestamp() + rows / rate
        out: dict[str, Any] = {"rows": rows, "load_eps": round(load_eps),
                               "disk_per_json": round(disk_bytes(path) / json_bytes, 2),
                               "disk_bytes_per_event": round(disk_bytes(path) / rows)}
        out["retention_noop_ms"] = round(await timed(lambda: store.prune(30 * 86400.0, 1 << 40, now=end), 5), 2)

        async def recent() -> None:
            assert len(await store.events(EventFilter(since=end - 600), 0, 500)) == 500

        out["range_ms"] = round(await timed(recent, 5), 2)
        out["cheap_alone_ms"] = round(await timed(store.head), 2)
        scan = asyncio.ensure_future(store.events(EventFilter(code=299), 0, 10))  # matches nothing: a full scan
        await asyncio.sleep(0.05)
        out["cheap_behind_scan_ms"] = round(await timed(store.head, 3), 2)
        try:
            await scan
        except Exception as exc:  # a query timeout counts as the scan's end
            out["scan_error"] = type(exc).__name__
        out.update(await prune_while_ingesting(store, end - (rows / rate) * 0.9, end))
        return out
    finally:
        await store.close()


def parsed(records: list[dict[str, Any]]) -> list[Any]:
    """What the ingest pipeline hands the store: each record parsed once (kube_audit/model/audit.py), so
    a commit wait is the store's, not the parsing's. Raw records for a tree from before that model."""
    try:
        from kube_audit.model.audit import parse
    except ImportError:
        return records
    return [parse(r) for r in records]


async def prune_while_ingesting(store: Any, cutoff: float, end: float, prefix: str = "") -> dict[str, Any]:
    """Chunks of 1,000 parsed events keep arriving (10 ms apart) while the oldest 10% are pruned: the
    longest and the median wait of one chunk's commit (``store.insert``, as the store sink times it) during
    the prune, next to the same without a prune just before; and the retention jobs: how many, the longest
    one (its statements, plus its commit when it had one of its own), how many rode in a chunk's commit.
    1,000 events is the forwarder's --chunk-events; at 1.5 KB a realistic event, its --chunk-bytes 1Mi
    would cut ~800 (1.3 KB packed each): the bench's chunks are the larger, slower case."""
    from bench.events import many

    waits: list[float] = []
    stop = asyncio.Event()

    async def ingest() -> None:
        fresh = many(10**9, seed=9, start=(end - 1_763_629_200.0))
        while not stop.is_set():
            chunk = await asyncio.to_thread(lambda: parsed([next(fresh) for _ in range(1000)]))
            t = time.perf_counter()
            await store.insert(chunk)
            waits.append(time.perf_counter() - t)
            await asyncio.sleep(0.01)

    holds: list[float] = []  # how long each of the prune's own jobs (deletes, reclaims) took
    kinds: list[str] = []  # each one's kind, where the tree tells
    kind_now = [""]
    folded = [0]
    restore: list[str] = []
    if hasattr(store, "_prune_write"):  # retention jobs folded into group commits or on their own connection
        prune_write = store._prune_write

        async def timed_prune(fn: Any) -> Any:
            alone = [False]
            kind = "delete" if getattr(fn, "func", None) == store._delete_oldest else "reclaim"

            def watch(conn: Any) -> Any:
                alone[0] = store._fold_now is None  # not inside a chunk's ``_insert``
                kind_now[0] = kind
                return fn(conn)

            out = await prune_write(watch)
            if not alone[0]:  # its statements, in the chunk's transaction
                holds.append(store.last_prune_s)
                kinds.append(kind)
                folded[0] += 1
            elif not store.folds_prunes:  # on its own connection: its statements and commit, beside the writer
                holds.append(store.last_prune_s)
                kinds.append(kind)
            return out

        store._prune_write, restore = timed_prune, ["_prune_write"]
        if store.folds_prunes:  # a job alone holds the writer for its statements and its commit
            run_alone = store._run_alone

            async def timed_alone(fold: Any) -> None:
                t = time.perf_counter()
                await run_alone(fold)
                holds.append(time.perf_counter() - t)
                kinds.append(kind_now[0])

            store._run_alone, restore = timed_alone, [*restore, "_run_alone"]
    else:  # the older tree: each job its own transaction on the writer
        write = store._write

        async def timed_write(fn: Any) -> Any:
            if getattr(fn, "func", None) == store._insert:  # a chunk's commit, not the prune's
                return await write(fn)

            def run() -> Any:
                t = time.perf_counter()
                try:
                    return fn()
                finally:
                    holds.append(time.perf_counter() - t)

            return await write(run)

        store._write, restore = timed_write, ["_write"]
    task = asyncio.create_task(ingest())
    for _ in range(600):  # a few chunks alone first: the wait without a prune
        if len(waits) >= 8:
            break
        await asyncio.sleep(0.1)
    before = len(waits)
    t = time.perf_counter()
    deleted = await store.prune(end - cutoff, None, now=end)
    elapsed = time.perf_counter() - t
    stop.set()
    await task  # the chunk that waited behind the prune's end is counted too
    for name in restore:
        delattr(store, name)  # the instance's wrapper: the class's method again
    during, alone = waits[before:] or [0.0], waits[:before] or [0.0]
    return {f"{prefix}prune10_deleted": deleted[0], f"{prefix}prune10_s": round(elapsed, 2),
            f"{prefix}prune10_max_wait_ms": round(max(during) * 1000),
            f"{prefix}prune10_median_wait_ms": round(statistics.median(during) * 1000),
            f"{prefix}prune10_chunks": len(during),
            f"{prefix}prune10_longest_hold_ms": round(max(holds or [0.0]) * 1000),
            **{f"{prefix}prune10_longest_{kind}_ms": round(max([h for h, k in zip(holds, kinds, strict=True) if k == kind] or [0.0]) * 1000)
               for kind in ("delete", "reclaim") if len(kinds) == len(holds)},
            f"{prefix}prune10_transactions": len(holds) - folded[0], f"{prefix}prune10_folded": folded[0],
            f"{prefix}max_wait_alone_ms": round(max(alone) * 1000),
            f"{prefix}wait_alone_ms": round(statistics.median(alone) * 1000)}


async def case_postgresql(tmp: Path, n: int) -> dict[str, Any]:
    import orjson
    import psycopg

    from bench.events import events
    from bench.replicas import backend_cpu
    from bench.synth import free_port
    from tailer.store import Store
    from tests.helpers.pgserver import PostgresServer

    server = PostgresServer(free_port(), fsync=True).start()
    try:
        url = server.new_database()
        records = list(events(n, seed=3))
        chunks = [records[i:i + 1000] for i in range(0, n, 1000)]
        store = await Store.open(url)
        try:
            backend = store._wconn.info.backend_pid  # type: ignore[attr-defined]
            cpu = time.process_time() + backend_cpu(backend)
            rate = await insert_rate(store, chunks)
            cpu = time.process_time() + backend_cpu(backend) - cpu  # the whole process (and its writer backend)
        finally:
            await store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE audit_events")
            size = conn.execute("SELECT pg_total_relation_size('audit_events')").fetchone()[0]  # type: ignore[index]
        json_bytes = sum(len(orjson.dumps(e)) for e in records)
        return {"pg_insert_eps": round(rate), "pg_cpu_us_per_event": round(cpu / n * 1e6),
                "pg_disk_per_json": round(size / json_bytes, 2),
                "pg_bytes_per_event": round(size / n)}
    finally:
        server.stop()


async def case_pgprune(tmp: Path, rows: int) -> dict[str, Any]:
    from bench.events import START
    from bench.synth import free_port
    from tailer.store import Store
    from tests.helpers.pgserver import PostgresServer

    server = PostgresServer(free_port(), fsync=True).start()
    try:
        store = await Store.open(server.new_database())
        rate = 500.0
        try:
            load_eps, _ = await load(store, rows, rate)
            end = START.timestamp() + rows / rate
            return {"pg_rows": rows, "pg_load_eps": round(load_eps),
                    **await prune_while_ingesting(store, end - (rows / rate) * 0.9, end, prefix="pg_")}
        finally:
            await store.close()
    finally:
        server.stop()


def worker(case: str, size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fn = {"insert": case_insert, "commits": case_commits, "large": case_large, "postgresql": case_postgresql, "pgprune": case_pgprune}[case]
        print(json.dumps(asyncio.run(fn(Path(tmp), size))), flush=True)


# ---- driver ----

def unpack(rev: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(HERE), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_worker(tree: Path, shim_root: Path, case: str, size: int) -> dict[str, Any]:
    # bench/ and tests/helpers from this tree (the shim), the rest from the tree under test
    code = (f"import sys; sys.path[:0] = [{str(shim_root)!r}, {str(tree)!r}]; "
            f"from bench.store_perf import worker; worker({case!r}, {size})")
    env = dict(os.environ, PYTHONPATH="")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=3600, cwd=str(tree))
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1][:120]}
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def shim(tmp: Path) -> Path:
    """bench/ and tests/helpers of this tree, importable next to an older tree's tailer/."""
    root = tmp / "shim"
    for part in ("bench", "tests"):
        (root / part).mkdir(parents=True, exist_ok=True)
    for f in (HERE / "bench").glob("*.py"):
        (root / "bench" / f.name).write_bytes(f.read_bytes())
    (root / "tests" / "__init__.py").write_text("")
    helpers = root / "tests" / "helpers"
    helpers.mkdir(exist_ok=True)
    for f in (HERE / "tests" / "helpers").glob("*.py"):
        (helpers / f.name).write_bytes(f.read_bytes())
    return root


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--before", default="8a254db", help="git revision to compare with ('' = none)")
    p.add_argument("--after", default="", help="git revision to measure ('' = this working tree)")
    p.add_argument("--cases", default="insert,commits,large,postgresql,pgprune")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        after = unpack(a.after, Path(tmp) / "after") if a.after else HERE
        trees = {"after": after}
        if a.before:
            trees = {"before": unpack(a.before, Path(tmp) / "before"), "after": after}
        shim_root = shim(Path(tmp))
        results: dict[str, dict[str, list[Any]]] = {name: {} for name in trees}
        for run in range(a.runs):
            for case in a.cases.split(","):
                for name, tree in trees.items():  # interleaved: before, after, before, after, ...
                    size = a.rows if case in ("large", "pgprune") else a.events
                    got = run_worker(tree, shim_root, case, size)
                    print(f"run {run + 1} {case} {name}: {got}", flush=True)
                    for key, value in got.items():
                        results[name].setdefault(key, []).append(value)
    keys = sorted({k for r in results.values() for k in r})
    print(f"\n{'medians of ' + str(a.runs) + ' runs':28} " + " ".join(f"{n:>14}" for n in trees) + "   goal")
    for key in keys:
        cells = []
        for name in trees:
            values = results[name].get(key, [])
            nums = [v for v in values if isinstance(v, (int, float))]
            cells.append(f"{statistics.median(nums):>14,}" if nums else f"{str(values[:1]):>14}")
        print(f"{key:28} " + " ".join(cells) + f"   {GOALS.get(key, '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
