"""End to end: audit log file -> audit-forwarder -> audit-tailer, acked.

1. Throughput: a synthetic audit log of --events events (median ~1 KB, 1% at 100 KB) already on
   disk; the forwarder starts with --read-from-head; we time until the tailer has acked them all
   (forwarder_events_acked_total), and report events/s, MB/s, the forwarder's CPU seconds and
   peak RSS.
2. Latency: a writer appends events at --rate events/s for --seconds; each line carries its
   write time; the tailer's stdout is read here and p50/p99 of (received - written) reported.

    .venv/bin/python bench/forwarder_e2e.py [--events 200000] [--rate 5000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.daemon import cpu_seconds, peak_rss_mb  # noqa: E402
from bench.synth import events, free_port  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(ROOT), KUBECONFIG=os.devnull)
DATA_DIR = tempfile.mkdtemp(prefix="kaf-bench-store-")  # the tailer keeps its default SQLite store



def metric(port: int, name: str) -> float:
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def wait_port(port: int) -> None:
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def proc_stats(pid: int) -> tuple[float, float]:
    """CPU seconds and peak RSS (MB) of a live process."""
    return cpu_seconds(pid), peak_rss_mb(pid)


def start_tailer(port: int, http: int, stdout: int | object, store: str = "sqlite") -> subprocess.Popen[bytes]:
    data_dir = tempfile.mkdtemp(dir=DATA_DIR)
    proc = subprocess.Popen([sys.executable, "-m", "tailer.cli", "--listen", f"127.0.0.1:{port}", "--http-listen",
                             f"127.0.0.1:{http}", "--log-level", "warning", "--data-dir", data_dir, "--store", store,
                             "--configmaps", "false"], stdout=stdout, env=ENV)  # type: ignore[arg-type]
    wait_port(port)
    return proc


def start_forwarder(port: int, http: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "forwarder.cli", "--tailer", f"127.0.0.1:{port}",
                             "--audit-log-path", str(log), "--http-listen", f"127.0.0.1:{http}",
                             "--log-level", "warning", *extra], env=ENV)


def throughput(n: int, folder: Path, compress: bool, store: str) -> str:
    log = folder / "audit.log"
    for p in folder.iterdir():
        p.unlink()
    size = 0
    with log.open("wb") as fh:
        for ev in events(n):
            line = orjson.dumps(ev, option=orjson.OPT_APPEND_NEWLINE)
            size += len(line)
            fh.write(line)
    port, thttp, fhttp = free_port(), free_port(), free_port()
    with open(os.devnull, "wb") as null:
        tailer = start_tailer(port, thttp, null, store)
    start = time.perf_counter()
    fwd = start_forwarder(port, fhttp, log, "--read-from-head", "true", "--compress", str(compress).lower())
    try:
        wait_port(fhttp)
        while metric(fhttp, "forwarder_events_acked_total") < n:
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        cpu, rss = proc_stats(fwd.pid)
    finally:
        fwd.terminate()
        fwd.wait(20)
        tailer.terminate()
        tailer.wait(20)
    return (f"forwarder_e2e gzip={'on ' if compress else 'off'} tailer store={store} events={n} "
            f"file={size / 1e6:.0f} MB: "
            f"{n / elapsed:,.0f} events/s, {size / elapsed / 1e6:.1f} MB/s, forwarder CPU {cpu:.1f} s "
            f"({n / cpu:,.0f} events per CPU s), peak RSS {rss:.0f} MB, wall {elapsed:.1f} s")


def latency(rate: int, seconds: float, folder: Path) -> str:
    for p in folder.iterdir():
        p.unlink()
    log = folder / "audit.log"
    log.touch()
    port, thttp, fhttp = free_port(), free_port(), free_port()
    tailer = start_tailer(port, thttp, subprocess.PIPE)
    fwd = start_forwarder(port, fhttp, log)
    wait_port(fhttp)
    delays: list[float] = []

    def reader() -> None:
        assert tailer.stdout is not None
        for line in tailer.stdout:
            now = time.time_ns()
            delays.append((now - orjson.loads(line)["writtenAt"]) / 1e6)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    total = int(rate * seconds)
    template = list(events(1000, big_every=0))
    start = time.monotonic()
    with log.open("ab") as fh:
        for i in range(total):
            ev = dict(template[i % 1000], writtenAt=time.time_ns())
            fh.write(orjson.dumps(ev, option=orjson.OPT_APPEND_NEWLINE))
            fh.flush()
            ahead = (i + 1) / rate - (time.monotonic() - start)
            if ahead > 0.002:
                time.sleep(ahead)
    deadline = time.monotonic() + 30
    while len(delays) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    cpu, rss = proc_stats(fwd.pid)
    fwd.terminate()
    fwd.wait(20)
    tailer.terminate()
    tailer.wait(20)
    q = statistics.quantiles(delays, n=100)
    return (f"forwarder_e2e latency at {rate} events/s for {seconds:.0f} s: {len(delays)}/{total} received, "
            f"p50 {q[49]:.0f} ms, p99 {q[98]:.0f} ms, forwarder CPU {cpu / seconds * 100:.0f}% of one core, "
            f"RSS {rss:.0f} MB")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--rate", type=int, default=5000)
    p.add_argument("--seconds", type=float, default=20)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for compress, store in ((True, "sqlite"), (False, "sqlite"), (True, "none"), (False, "none")):
            print(throughput(a.events, folder, compress, store), flush=True)
        print(latency(a.rate, a.seconds, folder), flush=True)


if __name__ == "__main__":
    main()
