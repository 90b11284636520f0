"""How many audit events per second the tailer accepts from a local sender.

PackedForward chunks of 1,000 events, ack on, 4 chunks in flight, with and without gzip; the
tailer writes its stdout to /dev/null (the JSON encoding still happens). Chunks are encoded
before the clock starts so the sender's cost is not measured.

    .venv/bin/python bench/tailer_ingest.py [--events 200000]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fluent_forward as ff  # noqa: E402
from bench.store_e2e import connect, send_all  # noqa: E402
from bench.synth import events, free_port  # noqa: E402


def run(n: int, compress: bool, chunk_events: int = 1000, window: int = 4) -> dict[str, float]:
    records = list(events(n))
    raw_bytes = sum(len(orjson.dumps(r)) + 1 for r in records)
    chunks = []
    for c, i in enumerate(range(0, n, chunk_events)):
        packed = b"".join(ff.encode_entry(ff.EventTime(1_763_629_200, j), r)
                          for j, r in enumerate(records[i : i + chunk_events]))
        chunks.append((f"c{c}", ff.encode_packed_forward("audit", packed, chunk=f"c{c}", compress=compress)))
    wire = sum(len(b) for _, b in chunks)
    port, http = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen([sys.executable, "-m", "tailer.cli", "--listen", f"127.0.0.1:{port}",
                                 "--http-listen", f"127.0.0.1:{http}", "--log-level", "warning",
                                 "--store", "none"],  # stdout only; bench/store.py measures the store
                                stdout=null, env=env)
    try:
        elapsed = send_all(connect(port), chunks, window)
    finally:
        proc.terminate()
        proc.wait(15)
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"events_per_s": n / elapsed, "json_mb_per_s": raw_bytes / elapsed / 1e6,
            "wire_mb_per_s": wire / elapsed / 1e6, "seconds": elapsed, "tailer_cpu_s": cpu.ru_utime + cpu.ru_stime}


def json_encoders(n: int = 20000) -> dict[str, float]:
    """Why orjson: the stdout sink's encoding cost with orjson vs the standard library."""
    import json

    records = list(events(n, big_every=0))
    out = {}
    for name, dump in (("orjson", lambda r: orjson.dumps(r)), ("json", lambda r: json.dumps(r, separators=(",", ":")))):
        t = time.perf_counter()
        for r in records:
            dump(r)
        out[name] = n / (time.perf_counter() - t)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=200_000)
    args = p.parse_args()
    for compress in (False, True):
        r = run(args.events, compress)
        print(f"tailer_ingest gzip={'on ' if compress else 'off'} events={args.events} "
              f"{r['events_per_s']:,.0f} events/s  {r['json_mb_per_s']:.1f} MB/s of audit JSON  "
              f"{r['wire_mb_per_s']:.1f} MB/s on the wire  ({r['seconds']:.2f} s)")
    enc = json_encoders()
    print(f"stdout encoding: orjson {enc['orjson']:,.0f} records/s vs json {enc['json']:,.0f} records/s "
          f"({enc['orjson'] / enc['json']:.1f}x)")


if __name__ == "__main__":
    main()
