"""The chunk chain's cost on forwarder CPU per event (issue 12: goal under 5%), chain on vs off in one run.

1. In process, the forwarder's per-event path on realistic events (bench/events.py): a log line -> entry
   (lines.to_timed_entry) -> chunk of 1,000 (batcher, gzip) -> sealed message (chain.Chain with a key, or
   without: the option then names the source alone). On and off alternate, --rounds each; CPU time
   (process_time), median per event.
   Sealing alone is also timed (best of 20 over the same chunks): the chain's own cost per event, the
   precise figure, as a share of the whole path.
2. End to end (--e2e): two real forwarder processes, one with --integrity-key-file, one without, each
   sending the same file (--read-from-head) to a recording receiver that acks; their CPU seconds from /proc
   per event. Alternated --rounds times; noisier (a shared machine), the in-process figure is the precise one.

    .venv/bin/python bench/forwarder_chain.py [--events 20000] [--rounds 5] [--e2e]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.daemon import cpu_seconds  # noqa: E402
from bench.events import events  # noqa: E402
from fluent_forward import EventTime  # noqa: E402
from forwarder.batcher import Batcher  # noqa: E402
from forwarder.chain import Chain  # noqa: E402
from forwarder.lines import to_timed_entry  # noqa: E402
from kube_audit.model.source import SourceId  # noqa: E402

KEY = os.urandom(32)
SOURCE = SourceId("prod-eu-1", "kube-apiserver-ip-10-0-1-17")


def in_process(lines: list[bytes], key: bytes | None) -> float:
    """CPU seconds per event of line -> sealed message."""
    batcher, chain, src = Batcher("audit", 1000, 1024 * 1024, True), Chain(SOURCE, key), object()
    fallback = EventTime.now()
    start = time.process_time()
    offset = 0
    for line in lines:
        entry, when = to_timed_entry(line, fallback)
        for chunk in batcher.add(src, "id", entry, offset, offset + len(line) + 1, when):
            chain.seal(chunk)
        offset += len(line) + 1
    last = batcher.flush()
    if last is not None:
        chain.seal(last)
    return (time.process_time() - start) / len(lines)


def seal_only(lines: list[bytes], key: bytes | None, repeat: int = 20) -> float:
    """CPU seconds per event of sealing alone (the chunks built once, sealed ``repeat`` times): the
    chain's own cost, free of the noise of the rest of the path."""
    batcher, src, chunks, offset = Batcher("audit", 1000, 1024 * 1024, True), object(), [], 0
    fallback = EventTime.now()
    for line in lines:
        chunks += batcher.add(src, "id", to_timed_entry(line, fallback)[0], offset, offset + len(line) + 1)
        offset += len(line) + 1
    best = float("inf")
    for _ in range(repeat):
        chain = Chain(SOURCE, key)
        start = time.process_time()
        for chunk in chunks:
            chain.seal(chunk)
        best = min(best, time.process_time() - start)
    return best / (len(chunks) * 1000)


def end_to_end(log: Path, n: int, key_file: Path | None, folder: Path) -> float:
    """A real forwarder's CPU seconds per event, start to the last ack (start-up included in both)."""
    from tests.helpers.recorder import Recorder

    rec = Recorder()
    pos = folder / f"pos-{time.monotonic_ns()}"
    args = [sys.executable, "-m", "forwarder.cli", "--tailer", f"127.0.0.1:{rec.port}", "--audit-log-path",
            str(log), "--position-file", str(pos), "--read-from-head", "true", "--http-listen", "127.0.0.1:0",
            "--log-level", "warning", "--source-name", SOURCE.name, "--cluster", SOURCE.cluster,
            *(["--integrity-key-file", str(key_file)] if key_file else [])]
    proc = subprocess.Popen(args, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        while sum(len(b.records) for b in rec.batches("audit")) < n:
            if proc.poll() is not None:
                raise RuntimeError(f"forwarder exited {proc.returncode}")
            time.sleep(0.05)  # polling the receiver, not synchronisation
        return cpu_seconds(proc.pid) / n
    finally:
        proc.terminate()
        proc.wait(20)
        rec.close()


def overhead(on: list[float], off: list[float]) -> str:
    a, b = statistics.median(on), statistics.median(off)
    return (f"chain on {a * 1e6:.1f} us/event, off {b * 1e6:.1f} us/event: overhead {100 * (a - b) / b:+.2f}% "
            f"(medians of {len(on)}; spread on {min(on) * 1e6:.1f}-{max(on) * 1e6:.1f}, "
            f"off {min(off) * 1e6:.1f}-{max(off) * 1e6:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--e2e", action="store_true", help="also two real forwarder processes")
    args = parser.parse_args()
    lines = [orjson.dumps(e) for e in events(args.events)]
    size = sum(len(x) + 1 for x in lines)
    print(f"forwarder_chain: {args.events} events from bench/events.py, mean {size / args.events:.0f} bytes, "
          "chunks of 1,000, gzip")
    on: list[float] = []
    off: list[float] = []
    in_process(lines[:2000], KEY)  # warm-up
    for _ in range(args.rounds):
        on.append(in_process(lines, KEY))
        off.append(in_process(lines, None))
    print("in process (line -> sealed message):", overhead(on, off))
    path = min(off)
    sealed_on, sealed_off = seal_only(lines, KEY), seal_only(lines, None)
    print(f"sealing alone: {sealed_on * 1e6:.2f} us/event with the chain, {sealed_off * 1e6:.2f} without: the chain "
          f"adds {(sealed_on - sealed_off) * 1e6:.2f} us/event = {100 * (sealed_on - sealed_off) / path:.2f}% of the "
          f"fastest chain-off run of the whole path ({path * 1e6:.1f} us/event)")
    if not args.e2e:
        return
    with tempfile.TemporaryDirectory(prefix="kaf-chain-") as tmp:
        folder = Path(tmp)
        log, key_file = folder / "audit.log", folder / "key"
        log.write_bytes(b"".join(x + b"\n" for x in lines))
        key_file.write_bytes(KEY)
        on, off = [], []
        for _ in range(args.rounds):
            on.append(end_to_end(log, args.events, key_file, folder))
            off.append(end_to_end(log, args.events, None, folder))
        print("end to end (forwarder process CPU):", overhead(on, off))


if __name__ == "__main__":
    main()
