"""The tailer end to end with its SQLite store in the ack path vs ``--store none``, before and after.

A sender here (not the forwarder: it would share the two cores and blur the tailer's figure) sends
``--events`` realistic events (bench/events.py) as CompressedPackedForward chunks of 1,000 events, 4 in
flight, and waits for every ack; the tailer prints to /dev/null. Reported per run: events/s and the tailer's
CPU per event (user + system, from /proc), and where it went: the event loop (the main thread) and the
busiest other thread (with a store: its writer), each with its share of a core and of kernel time. The ratio is
CPU per event with ``--store none`` over with the SQLite store (1.0 = the store costs nothing). Trees and
stores are interleaved ``--runs`` times; medians.

    python -m bench.store_e2e [--events 100000] [--runs 3] [--before 8a254db]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

import fluent_forward as ff  # noqa: E402
from bench.daemon import cpu_seconds, thread_seconds  # noqa: E402
from bench.events import many  # noqa: E402
from bench.store_perf import unpack  # noqa: E402
from bench.synth import free_port  # noqa: E402


def chunks(n: int) -> list[tuple[str, bytes]]:
    records = list(many(n))
    out = []
    for c, i in enumerate(range(0, n, 1000)):
        packed = b"".join(ff.encode_entry(ff.EventTime(1_763_629_200 + j, 0), r)
                          for j, r in enumerate(records[i:i + 1000]))
        out.append((f"c{c}", ff.encode_packed_forward("audit", packed, chunk=f"c{c}", compress=True)))
    return out


def connect(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> socket.socket:
    """The tailer's forward port once it listens (it is starting); gives up after ``timeout`` seconds, or
    as soon as ``proc`` (the receiver) has exited."""
    end = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port))
        except OSError:
            if time.monotonic() > end or (proc is not None and proc.poll() is not None):
                raise TimeoutError(f"no tailer listening on port {port}") from None
            time.sleep(0.05)


def send_all(sock: socket.socket, data: list[tuple[str, bytes]], window: int = 4) -> float:
    """Send every chunk, ``window`` in flight, until each is acked in order; the seconds it took."""
    decoder, acked, sent = ff.Decoder(), 0, 0
    start = time.perf_counter()
    with sock:
        while acked < len(data):
            while sent < len(data) and sent - acked < window:
                sock.sendall(data[sent][1])
                sent += 1
            for msg in decoder.feed(sock.recv(65536)):
                assert msg == ff.Ack(data[acked][0]), msg
                acked += 1
    return time.perf_counter() - start


def threads(before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]], pid: int, n: int,
            elapsed: float) -> str:
    """The loop's and the busiest other thread's CPU per event, share of a core and kernel part."""
    used = {tid: (c - before.get(tid, (0.0, 0.0))[0], k - before.get(tid, (0.0, 0.0))[1]) for tid, (c, k) in after.items()}
    others = sorted((t for t in used if t != pid), key=lambda t: -used[t][0])
    out = []
    for name, tid in (("loop", pid), ("busiest other thread", others[0] if others else None)):
        if tid is not None and used[tid][0] > 0:
            cpu, kernel = used[tid]
            out.append(f"{name} {cpu / n * 1e6:.0f} µs ({cpu / elapsed:.0%} of a core, kernel {kernel / n * 1e6:.1f})")
    return ", ".join(out)


def run(tree: Path, store: str, data: list[tuple[str, bytes]], n: int) -> tuple[float, float, str]:
    """(events/s, tailer CPU µs per event, where it went by thread)."""
    port, http = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "wb") as null:
        env = dict(os.environ, PYTHONPATH=str(tree), KUBECONFIG=os.devnull)
        proc = subprocess.Popen([sys.executable, "-m", "tailer.cli", "--listen", f"127.0.0.1:{port}", "--http-listen",
                                 f"127.0.0.1:{http}", "--log-level", "warning", "--data-dir", tmp, "--store", store,
                                 "--configmaps", "false"], stdout=null, env=env, cwd=str(tree))
        try:
            sock = connect(port)
            idle, at_rest = cpu_seconds(proc.pid), thread_seconds(proc.pid)
            elapsed = send_all(sock, data)
            cpu = cpu_seconds(proc.pid) - idle
            split = threads(at_rest, thread_seconds(proc.pid), proc.pid, n, elapsed)
        finally:
            proc.terminate()
            proc.wait(30)
    return n / elapsed, cpu / n * 1e6, split


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--before", default="8a254db")
    p.add_argument("--after", default="", help="git revision to measure ('' = this working tree)")
    a = p.parse_args()
    data = chunks(a.events)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"after": unpack(a.after, Path(tmp) / "after") if a.after else HERE}
        if a.before:
            trees = {"before": unpack(a.before, Path(tmp) / "before"), **trees}
        got: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for r in range(a.runs):
            for name, tree in trees.items():
                for store in ("sqlite", "none"):
                    eps, us, split = run(tree, store, data, a.events)
                    got.setdefault((name, store), []).append((eps, us))
                    print(f"run {r + 1} {name} --store {store}: {eps:,.0f} events/s, {us:.0f} µs tailer CPU/event "
                          f"({split})", flush=True)
    print(f"\nmedians of {a.runs} runs, {a.events} events")
    for name in trees:
        med = {s: (statistics.median(e for e, _ in got[(name, s)]), statistics.median(u for _, u in got[(name, s)]))
               for s in ("sqlite", "none")}
        print(f"{name:7} sqlite {med['sqlite'][0]:>8,.0f} ev/s {med['sqlite'][1]:5.0f} µs/ev | none "
              f"{med['none'][0]:>8,.0f} ev/s {med['none'][1]:5.0f} µs/ev | CPU ratio none/sqlite "
              f"{med['none'][1] / med['sqlite'][1]:.2f}x, throughput ratio {med['sqlite'][0] / med['none'][0]:.2f}x "
              "(goal >= 0.8x)")
        # each run's pair (sqlite, then none, back to back): steadier than the ratio of medians on a machine
        # whose speed drifts between runs
        pairs = [s[0] / z[0] for s, z in zip(got[(name, "sqlite")], got[(name, "none")], strict=True)]
        print(f"{name:7} per run, the pair's throughput ratio: median {statistics.median(pairs):.2f}x "
              f"(lowest {min(pairs):.2f}x, highest {max(pairs):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
