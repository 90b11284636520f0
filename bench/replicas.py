"""Two tailer replicas on one PostgreSQL vs one (issue 13), on realistic events (bench/events.py).

Each replica is its own process with its own ``Store`` (as two tailer pods would be), inserting
1,000-event chunks one after another (one forwarder connection each) into one fresh database on a local
PostgreSQL server (fsync on). The replicas warm up first (their zstd dictionary trained), then start
together; the figure is all events over the wall time from the first start to the last end. Beside it,
the CPU each replica took per event (its process and its PostgreSQL backend): on a machine with few
cores that, not a lock, bounds what two replicas can reach. Per run and
code tree (``--before``: a git revision; after: this tree), 1 and then 2 replicas, interleaved ``--runs``
times; medians printed side by side.

    python -m bench.replicas [--events 20000] [--runs 3] [--before d0b19d0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.daemon import cpu_seconds
from bench.store_perf import HERE, shim, unpack

GOAL = ">= 1.7"


async def replica(url: str, n: int, seed: int) -> None:
    """One replica: warm up, say ``ready``, wait for ``go`` on stdin, insert, print when it started and ended."""
    from bench.events import events
    from tailer.store import Store

    records = list(events(n, seed=seed))
    chunks = [records[i:i + 1000] for i in range(0, n, 1000)]
    store = await Store.open(url)
    try:
        warm = list(events(2000, seed=seed + 1000))
        await store.insert(warm)
        for i in range(100):  # the dictionary is trained beside the writer: wait until it is in use
            if getattr(store, "_training", None) is None and store.codec.current is not None:
                break
            await asyncio.sleep(0.1)
            await store.insert(list(events(1, seed=seed + 2000 + i)))
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        backend = store._wconn.info.backend_pid  # type: ignore[attr-defined]
        start, cpu = time.time(), time.process_time() + cpu_seconds(backend)
        for chunk in chunks:
            await store.insert(chunk)
        end, cpu = time.time(), time.process_time() + cpu_seconds(backend) - cpu
        print(json.dumps({"start": start, "end": end, "events": n, "cpu": cpu}), flush=True)
    finally:
        await store.close()


def measure(tree: Path, shim_root: Path, url: str, replicas: int, n: int) -> tuple[float, float]:
    """Events per second of ``replicas`` processes of ``tree`` inserting ``n`` events each, and the CPU
    each took per event (its process and its PostgreSQL writer backend, µs)."""
    code = (f"import sys; sys.path[:0] = [{str(shim_root)!r}, {str(tree)!r}]; import asyncio; "
            f"from bench.replicas import replica; asyncio.run(replica(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))")
    env = dict(os.environ, PYTHONPATH="")
    procs = [subprocess.Popen([sys.executable, "-c", code, url, str(n), str(100 + i)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env, cwd=str(tree)) for i in range(replicas)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready", "a replica did not start"
        for p in procs:  # all at once
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        done = [json.loads(p.communicate(timeout=1800)[0].strip().splitlines()[-1]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    total = sum(d["events"] for d in done)
    return total / (max(d["end"] for d in done) - min(d["start"] for d in done)), sum(d["cpu"] for d in done) / total * 1e6


def main() -> int:
    from bench.synth import free_port
    from tests.helpers.pgserver import PostgresServer

    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=20_000, help="events per replica")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--before", default="d0b19d0", help="git revision to compare with ('' = none)")
    a = p.parse_args()
    server = PostgresServer(free_port(), fsync=True).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trees = {"after": HERE}
            if a.before:
                trees = {"before": unpack(a.before, Path(tmp) / "before"), "after": HERE}
            shim_root = shim(Path(tmp))
            results: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
            for run in range(a.runs):
                for name, tree in trees.items():  # interleaved: before, after, before, after, ...
                    one, cpu1 = measure(tree, shim_root, server.new_database(), 1, a.events)
                    two, cpu2 = measure(tree, shim_root, server.new_database(), 2, a.events)
                    print(f"run {run + 1} {name}: 1 replica {one:,.0f} events/s ({cpu1:.0f} µs CPU/event), "
                          f"2 replicas {two:,.0f} events/s ({cpu2:.0f} µs), {two / one:.2f}x; "
                          f"load average {os.getloadavg()[0]:.1f}", flush=True)
                    for key, value in (("1", one), ("2", two), ("ratio", two / one), ("cpu1", cpu1),
                                       ("cores1", one * cpu1 / 1e6)):
                        results[name].setdefault(key, []).append(value)
    finally:
        server.stop()
    print(f"\n{'medians of ' + str(a.runs) + ' runs':32} " + " ".join(f"{n:>12}" for n in trees) + "   goal")
    for key, label in (("1", "1 replica (events/s)"), ("2", "2 replicas (events/s)"), ("ratio", "2 replicas / 1"),
                       ("cpu1", "1 replica: CPU µs per event"), ("cores1", "1 replica: cores busy")):
        cells = [statistics.median(results[n][key]) for n in trees]
        print(f"{label:32} " + " ".join(f"{c:>12,.2f}" if key in ("ratio", "cores1") else f"{c:>12,.0f}"
                                        for c in cells) + f"   {GOAL if key == 'ratio' else ''}")
    print(f"(2 replicas can reach at most {os.cpu_count()} / cores busy of 1 replica on this machine, "
          "less what other processes take)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
