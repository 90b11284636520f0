"""The watch fan-out alone, in process: what 200 open watches cost the tailer's event loop per event.

bench/watchers.py measures ingest with watchers end to end, where the client that reads 200 streams
shares the machine with the tailer; here only the fan-out runs. A SQLite store holds ``--events``
realistic events (bench/events.py); the watch ring (tailer/api/ring.py) is fed them as segments of
``--per`` events, one wake of every watcher each, and 200 watches with bench/watchers.py's filters
(the real ``Watches.stream``: matching, encoding, joining, its timers) write to responses that take the
bytes at once (no sockets). Reported: CPU per event (the process's, over the fan-out only) and how
many lines the watchers wrote. Each tree runs in a fresh process, interleaved, so ours is next to the
baseline in the same run.

    python -m bench.watch_fanout [--events 20000] [--per 500,1000] [--runs 3] [--before febeb72]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import inspect
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


class Taker:
    """A response that takes every write at once. Its lines are counted after the measured part: counting
    them as they come (``bytes.count``, byte by byte) cost this process ~20k instructions per event, a fifth
    of what it measured."""

    written: list[bytes] = []

    async def write(self, data: bytes) -> None:
        Taker.written.append(data)

    @classmethod
    def lines(cls) -> int:
        return sum(data.count(b"\n") for data in cls.written)

    async def write_eof(self) -> None:
        pass


async def fanout(events: int, per: int, watchers: int) -> tuple[float, int]:
    """(CPU seconds of the fan-out, lines written): runs in the tree under test (its tailer package)."""
    from bench.events import many
    from tailer.api import resource
    from tailer.api.ring import RingRow
    from tailer.api.watch import Watches, WatchHub
    from tailer.metrics import TailerMetrics
    from tailer.store import Store

    spec = importlib.util.spec_from_file_location("bench_watchers", HERE / "bench" / "watchers.py")
    assert spec is not None and spec.loader is not None
    watchers_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(watchers_bench)
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(str(Path(tmp) / "audit.db"))
        records = list(many(events))
        for i in range(0, events, 1000):
            await store.insert(records[i:i + 1000])
        del records
        reads = [await store.rows_after(a, per, RingRow._fields[:-1]) for a in range(0, events, per)]
        flts = []
        for f in watchers_bench.filters(watchers):
            params = {k: v for k, v in f.items() if k != "namespace"}
            flts.append(resource.plan(resource.selection(params, lambda k, p=params: [p[k]] if k in p else [],
                                                         f.get("namespace"))).store)

        def encode(seq: int, event: Any, source: Any = None) -> Any:  # as the API's watch route encodes an item
            if hasattr(resource, "item_json"):  # (a tree whose ring holds each event's JSON bytes)
                return resource.item_json(seq, event, source)
            return resource.item(seq, event, source=source)

        hub = WatchHub()
        watches = Watches(store, hub, TailerMetrics())
        ring = watches.ring
        ring.running = True  # fed here, not by its task
        extra: dict[str, Any] = {"fits": lambda n: True} if "fits" in inspect.signature(watches.stream).parameters else {}
        tasks = [asyncio.create_task(watches.stream(Taker(), flt, 0, hub.register(), encode=encode,  # type: ignore[arg-type]
                                                    encoding="item", **extra)) for flt in flts]
        await asyncio.sleep(0.05)
        gc.collect()
        start = time.process_time()
        for rows in reads:
            ring.append(rows, 0)
            hub.wake()
            for _ in range(20):  # every watcher takes its share of this wake
                await asyncio.sleep(0)
        cpu = time.process_time() - start
        hub.close()
        await asyncio.gather(*tasks)
        await store.close()
    return cpu, Taker.lines()


def run(tree: Path, events: int, per: int, watchers: int) -> tuple[float, int]:
    code = (f"import sys, asyncio, importlib.util; sys.path[:0] = [{str(tree)!r}]; "
            f"spec = importlib.util.spec_from_file_location('fan', {str(HERE / 'bench' / 'watch_fanout.py')!r}); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            f"print(*asyncio.run(m.fanout({events}, {per}, {watchers})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tree), timeout=1800,
                         env=dict(os.environ, PYTHONPATH=""), check=True)
    cpu, lines = out.stdout.split()
    return float(cpu), int(lines)


def main() -> int:
    from bench.store_perf import unpack  # the driver only (a worker runs inside the tree under test)

    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--watchers", type=int, default=200)
    p.add_argument("--per", default="500,1000", help="events per wake (comma-separated cases)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--before", default="febeb72", help="git revision of the baseline ('' = none)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"after": HERE}
        if a.before:
            trees = {"before": unpack(a.before, Path(tmp) / "before"), **trees}
        got: dict[tuple[str, int], list[float]] = {}
        for r in range(a.runs):
            for per in (int(x) for x in a.per.split(",")):
                for name, tree in trees.items():
                    cpu, lines = run(tree, a.events, per, a.watchers)
                    got.setdefault((name, per), []).append(cpu / a.events * 1e6)
                    print(f"run {r + 1} {name:6} {per:5} events per wake: {cpu / a.events * 1e6:5.1f} µs CPU per event, "
                          f"{lines:,} lines", flush=True)
    print(f"\nmedians of {a.runs} runs, {a.events} events, {a.watchers} watchers, load average "
          f"{open('/proc/loadavg').read().split()[0]}")
    for (name, per), values in got.items():
        print(f"{name:6} {per:5} events per wake: {statistics.median(values):5.1f} µs CPU per event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
