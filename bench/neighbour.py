"""What work on the other core costs the tailer's event loop: the ``--store none`` path alone and beside a
neighbour process, in the same run.

Why it matters: the SQLite store's own work (B-tree inserts, zstd) runs beside the loop, on the writer thread
or in another process; if the cores were independent that would cost the loop nothing but the GIL it takes.
The tailer (``--store none``, stdout to /dev/null) takes ``--events`` realistic events as bench/store_e2e.py
sends them, while a neighbour process runs one of:

    spin     a Python loop that touches no memory
    msgpack  msgpack decoding of realistic chunks (what the loop itself does most)
    sqlite   SQLite inserts of realistic events into a table with two indexes, no fsync

Reported: the tailer's events/s and CPU per event (user + system, from /proc) for each, interleaved ``--runs``
times, medians; the neighbour's share is how much slower the loop's own work became.

    python -m bench.neighbour [--events 30000] [--runs 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from bench.events import many  # noqa: E402
from bench.store_e2e import chunks, run  # noqa: E402

KINDS = ("alone", "spin", "msgpack", "sqlite")


def neighbour(kind: str, ready: Any) -> None:
    """Work until killed; ``ready`` is set once the work itself runs (its data built)."""
    if kind == "spin":
        ready.set()
        while True:
            pass
    import gzip

    import msgpack
    import orjson

    if kind == "msgpack":
        raws = [gzip.decompress(msgpack.unpackb(b, raw=False, strict_map_key=False)[1]) for _, b in chunks(3000)]
        ready.set()
        while True:
            for raw in raws:
                reader = msgpack.Unpacker(raw=False)
                reader.feed(raw)
                for _ in reader:
                    pass
    events = [orjson.dumps(e).decode() for e in many(2000)]
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(str(Path(tmp) / "n.db"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, a TEXT, b TEXT, event TEXT)")
        conn.execute("CREATE INDEX t_a ON t (a, seq)")
        conn.execute("CREATE INDEX t_b ON t (b, seq)")
        ready.set()
        for i in range(1 << 62):
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO t (a, b, event) VALUES (?, ?, ?)", [(e[20:60], e[60:100], e) for e in events])
            conn.execute("COMMIT")
            if i % 20 == 19:  # a bounded table
                conn.execute("DELETE FROM t WHERE seq <= (SELECT MAX(seq) FROM t) - 100000")


def measure(kind: str, data: list[tuple[str, bytes]], n: int) -> tuple[float, float]:
    if kind == "alone":
        return run(HERE, "none", data, n)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=neighbour, args=(kind, ready), daemon=True)
    proc.start()
    try:
        if not ready.wait(120):
            raise RuntimeError(f"the {kind} neighbour did not start")
        time.sleep(0.5)  # (its first steps)
        return run(HERE, "none", data, n)
    finally:
        proc.kill()
        proc.join(10)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=30_000)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    data = chunks(a.events)
    got: dict[str, list[tuple[float, float]]] = {}
    for r in range(a.runs):
        for kind in KINDS:
            eps, us = measure(kind, data, a.events)
            got.setdefault(kind, []).append((eps, us))
            print(f"run {r + 1} tailer --store none, neighbour {kind:8}: {eps:>7,.0f} events/s, {us:4.1f} µs CPU/event",
                  flush=True)
    print(f"\nmedians of {a.runs} runs, {a.events} events")
    base = statistics.median(u for _, u in got["alone"])
    for kind in KINDS:
        eps = statistics.median(e for e, _ in got[kind])
        us = statistics.median(u for _, u in got[kind])
        print(f"neighbour {kind:8} {eps:>7,.0f} ev/s {us:5.1f} µs/ev ({us / base:.2f}x the tailer's CPU alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
