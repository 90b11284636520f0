"""The audit API next to ingest: does one stall the other? Before and after, on realistic events.

A tailer process (``--before`` tree, then this one, interleaved ``--runs`` times) with its SQLite store and its
API on an HTTPS port of its own, as deployed (since the API process, the API runs in a child process; the
ingest CPU is of the whole process tree),
preloaded with realistic events (bench/events.py) and two changed objects: a ConfigMap of 400 keys changed
5,000 times by merge patches (as a controller would) and one of 20 keys changed 50 times. Then:

  ingest  API latency while ingest runs at full speed (realistic CompressedPackedForward chunks of 1,000
          events, 4 in flight, every event new): a list of 100 events of one namespace, and the version
          history (``versions``) of the 50-change ConfigMap; the ingest rate meanwhile; and the event loop's
          longest stall (a probe in the tailer process: a callback due every 5 ms, how late it ran).
  acks    (``--acks``) ack latency of small chunks (100 events, one in flight) when idle, and while two
          clients keep asking for the 5,000-change object's versions with ?limit=5000 (seconds of
          provenance CPU each).

    python -m bench.api_latency [--seconds 10] [--runs 3] [--before febeb72] [--acks]
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fluent_forward as ff  # noqa: E402
from bench.daemon import serving_pair, tree_cpu  # noqa: E402
from bench.events import many  # noqa: E402
from bench.store_perf import unpack  # noqa: E402
from bench.synth import free_port  # noqa: E402

PREFIX = "/apis/audit.kube-audit-forwarder.io/v1alpha1"
BUSY = PREFIX + "/namespaces/shop/configmaps/big/versions"
SMALL = PREFIX + "/namespaces/shop/configmaps/small/versions"
LIST = PREFIX + "/events"
NAMESPACE = "payments"  # ~6.5% of bench/events.py's events
TICK = 0.005  # the loop probe's period


def busy_object(changes: int, width: int = 400, name: str = "big") -> Iterator[dict[str, Any]]:
    ref = {"resource": "configmaps", "namespace": "shop", "name": name, "apiVersion": "v1"}
    common = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete", "objectRef": ref,
              "user": {"username": "system:serviceaccount:shop:config-sync"}, "level": "Request",
              "stageTimestamp": "2026-11-20T10:00:00.000000Z"}
    data = {f"key-{i}": f"{name}-{i:04x}-{i * 7919 % 100_003:06d}-initial" for i in range(width)}
    yield {**common, "auditID": f"{name}-create", "verb": "create", "responseStatus": {"code": 201},
           "requestObject": {"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                             "metadata": {"name": name, "namespace": "shop"}}}
    for i in range(changes - 1):
        yield {**common, "auditID": f"{name}-patch-{i}", "verb": "patch", "responseStatus": {"code": 200},
               "requestObject": {"data": {f"key-{i % width}": f"value-{i}-{i * 104_729 % 1_000_003}"}}}


class Tailer:
    """A tailer process as deployed: its API on an HTTPS port of its own (after this change: in the API's
    own process; a tree from before: on the tailer's event loop)."""

    def __init__(self, tree: Path, work: Path) -> None:
        self.port, self.http, api = free_port(), free_port(), free_port()
        self.probe = work / "loop-lag"
        cert, key = serving_pair(work)
        self.verify = str(cert)
        args = ["--listen", f"127.0.0.1:{self.port}", "--http-listen", f"127.0.0.1:{self.http}", "--log-level",
                "warning", "--data-dir", str(work / "data"), "--api-auth", "none", "--stdout", "false", "--configmaps",
                "false", "--api-listen", f"127.0.0.1:{api}", "--api-tls-cert", str(cert), "--api-tls-key", str(key)]
        # the tree under test first; the probe (stdlib only) loaded by its path, so nothing of this tree is imported
        code = (f"import sys; sys.path[:0] = [{str(tree)!r}]; from importlib.util import spec_from_file_location as s, "
                f"module_from_spec as m; spec = s('loop_probe', {str(ROOT / 'bench' / 'loop_probe.py')!r}); "
                f"mod = m(spec); spec.loader.exec_module(mod); mod.serve_with_probe({str(self.probe)!r}, {args!r})")
        env = dict(os.environ, PYTHONPATH="", KUBECONFIG=os.devnull)
        with open(os.devnull, "wb") as null:
            self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=null, env=env, cwd=str(tree))
        self.url = f"https://127.0.0.1:{api}"
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{self.http}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the tailer did not start")

    def client(self, timeout: float) -> httpx.Client:
        return httpx.Client(timeout=timeout, verify=self.verify)

    def probed(self, kind: str, start: float, end: float) -> list[float]:
        """The probe's figures of one kind between two monotonic times: "lag" (seconds late, each > 1 ms),
        "step" (CPU seconds of each loop step over 2 ms)."""
        out = []
        for line in self.probe.read_text().splitlines():
            what, at, value, *_ = line.split()
            if what == kind and start <= float(at) <= end:
                out.append(float(value))
        return out

    def cpu(self) -> float:
        return tree_cpu(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


class Sender:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.decoder, self.n = ff.Decoder(), 0

    def chunk(self, records: list[dict[str, Any]], compress: bool = True) -> bytes:
        self.n += 1
        packed = b"".join(ff.encode_entry(ff.EventTime(1_763_629_200, j), r) for j, r in enumerate(records))
        return ff.encode_packed_forward("audit", packed, chunk=f"c{self.n}", compress=compress)

    def acks(self, count: int) -> None:
        got = 0
        while got < count:
            got += len(list(self.decoder.feed(self.sock.recv(65536))))

    def send(self, records: list[dict[str, Any]]) -> float:
        data = self.chunk(records)
        t = time.perf_counter()
        self.sock.sendall(data)
        self.acks(1)
        return time.perf_counter() - t


def pick(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


def quantiles(xs: list[float]) -> str:
    if not xs:
        return "n=0"
    return f"n={len(xs)} p50 {pick(xs, 0.5):.1f} ms  p99 {pick(xs, 0.99):.1f} ms  max {max(xs) * 1000:.1f} ms"


def ack_latency(tailer: Tailer, seconds: float, busy: bool) -> str:
    stop = threading.Event()
    views: list[float] = []

    def ask() -> None:
        with tailer.client(300) as http:
            while not stop.is_set():
                t = time.perf_counter()
                assert http.get(tailer.url + BUSY, params={"limit": "5000"}).status_code == 200
                views.append(time.perf_counter() - t)

    askers = [threading.Thread(target=ask) for _ in range(2 if busy else 0)]
    for thread in askers:
        thread.start()
    sender, pool, lat = Sender(tailer.port), list(many(5000, seed=3)), []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        batch = [{**r, "auditID": f"ack-{busy}-{i}-{j}"} for j, r in enumerate(pool[(i * 100) % 4900:][:100])]
        lat.append(sender.send(batch))
        i += 1
    stop.set()
    for thread in askers:
        thread.join()
    return f"acks {quantiles(lat)}" + (f"; object views {quantiles(views)}" if busy else "")


def load_chunks(n: int) -> list[bytes]:
    """``n`` events never stored before, as compressed 1,000-event chunks (built before the clock starts)."""
    sender, records = Sender.__new__(Sender), list(many(n, seed=11, start=7200.0))
    sender.n = 10_000
    return [sender.chunk(records[i:i + 1000]) for i in range(0, n, 1000)]


def api_under_ingest(tailer: Tailer, seconds: float, chunks: list[bytes]) -> dict[str, Any]:
    stop = threading.Event()
    sent = [0]

    def ingest() -> None:
        sender = Sender(tailer.port)
        k = inflight = 0
        while not stop.is_set() or inflight:
            while not stop.is_set() and inflight < 4 and k < len(chunks):
                sender.sock.sendall(chunks[k])
                k, inflight = k + 1, inflight + 1
            if not inflight:
                break  # (ran out of chunks: the phase ends early, said below)
            sender.acks(1)
            inflight -= 1
            sent[0] += 1000

    loader = threading.Thread(target=ingest)
    lists: list[float] = []
    histories: list[float] = []
    t0, cpu0 = time.monotonic(), tailer.cpu()
    loader.start()
    with tailer.client(120) as http:
        while time.monotonic() - t0 < seconds and loader.is_alive():
            t = time.perf_counter()
            assert len(http.get(tailer.url + LIST, params={"namespace": NAMESPACE, "limit": "100"})
                       .json()["items"]) == 100
            lists.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert http.get(tailer.url + SMALL).status_code == 200
            histories.append(time.perf_counter() - t)
    t1 = time.monotonic()
    stop.set()
    loader.join()
    rate, cpu = sent[0] / (time.monotonic() - t0), (tailer.cpu() - cpu0) / max(sent[0], 1)
    lags, steps = tailer.probed("lag", t0, t1), tailer.probed("step", t0, t1)
    ticks = [0.0] * max(0, int((t1 - t0) / TICK) - len(lags))  # the ticks that ran on time
    return {"list": lists, "history": histories, "rate": rate, "cpu_us": cpu * 1e6, "stall_max": max(lags, default=0.0),
            "stall_p99": pick(lags + ticks, 0.99) / 1000, "step_max": max(steps, default=0.0)}


def preload(tailer: Tailer) -> None:
    sender = Sender(tailer.port)
    busy = list(busy_object(5000)) + list(busy_object(50, width=20, name="small"))
    for i in range(0, len(busy), 1000):
        sender.send(busy[i:i + 1000])
    base = list(many(20_000, seed=5))
    for i in range(0, len(base), 1000):
        sender.send(base[i:i + 1000])


def one_run(tree: Path, seconds: float, chunks: list[bytes], acks: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work:
        tailer = Tailer(tree, Path(work))
        try:
            preload(tailer)
            if acks:
                print(f"  idle:        {ack_latency(tailer, seconds, busy=False)}")
                print(f"  busy views:  {ack_latency(tailer, seconds, busy=True)}")
            return api_under_ingest(tailer, seconds, chunks)
        finally:
            tailer.stop()


def line(name: str, got: dict[str, Any]) -> str:
    return (f"{name:6} list of 100: p50 {pick(got['list'], 0.5):6.1f} ms p99 {pick(got['list'], 0.99):6.1f} ms | "
            f"versions: p50 {pick(got['history'], 0.5):6.1f} ms p99 {pick(got['history'], 0.99):6.1f} ms | "
            f"ingest {got['rate']:,.0f} events/s, {got['cpu_us']:.0f} µs CPU/event | longest loop step "
            f"{got['step_max'] * 1000:.0f} ms CPU | loop late max {got['stall_max'] * 1000:.0f} ms, "
            f"p99 {got['stall_p99'] * 1000:.0f} ms | n={len(got['list'])}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--before", default="", help="git revision to compare with ('' = this tree alone)")
    p.add_argument("--acks", action="store_true", help="also the ack-latency phases (idle, busy object views)")
    args = p.parse_args()
    chunks = load_chunks(int(args.seconds * 8000))
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"after": ROOT}
        if args.before:
            trees = {"before": unpack(args.before, Path(tmp) / "before"), **trees}
        got: dict[str, list[dict[str, Any]]] = {}
        for r in range(args.runs):
            for name, tree in trees.items():
                print(f"run {r + 1} {name} (load average {open('/proc/loadavg').read().split()[0]}):", flush=True)
                got.setdefault(name, []).append(one_run(tree, args.seconds, chunks, args.acks))
                print("  " + line(name, got[name][-1]), flush=True)
    print(f"\nmedians of {args.runs} runs, {args.seconds:g} s each (API under ingest at full speed)")
    for name, runs in got.items():
        med = {"list": [statistics.median(pick(g["list"], q) for g in runs) / 1000 for q in (0.5, 0.99)],
               "history": [statistics.median(pick(g["history"], q) for g in runs) / 1000 for q in (0.5, 0.99)]}
        print(f"{name:6} list of 100: p50 {med['list'][0] * 1000:6.1f} ms p99 {med['list'][1] * 1000:6.1f} ms | "
              f"versions: p50 {med['history'][0] * 1000:6.1f} ms p99 {med['history'][1] * 1000:6.1f} ms | ingest "
              f"{statistics.median(g['rate'] for g in runs):,.0f} events/s, "
              f"{statistics.median(g['cpu_us'] for g in runs):.0f} µs CPU/event | longest loop step "
              f"{statistics.median(g['step_max'] for g in runs) * 1000:.0f} ms CPU | loop late max "
              f"{statistics.median(g['stall_max'] for g in runs) * 1000:.0f} ms, p99 "
              f"{statistics.median(g['stall_p99'] for g in runs) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
