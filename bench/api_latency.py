"""The audit API next to ingest: does one stall the other?

A tailer process with its SQLite store, preloaded with synthetic events and one busy object (a ConfigMap
changed 5,000 times by merge patches, as a controller would). Then:

  1. ack latency of small chunks (100 events, one in flight) when idle, and while a client keeps asking for
     that object's versions with ?limit=5000 (seconds of provenance CPU each);
  2. API latency while ingest runs at full speed (chunks of 1,000, 4 in flight): a list of 100 events of one
     namespace, and the version history of one object (a ConfigMap of 20 keys changed 50 times).

    .venv/bin/python bench/api_latency.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import socket
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
from bench.synth import events, free_port  # noqa: E402

PREFIX = "/apis/audit.kube-audit-forwarder.io/v1alpha1"
BUSY = PREFIX + "/namespaces/shop/configmaps/big/versions"


def busy_object(changes: int, width: int = 400, name: str = "big") -> Iterator[dict[str, Any]]:
    ref = {"resource": "configmaps", "namespace": "shop", "name": name, "apiVersion": "v1"}
    common = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete", "objectRef": ref,
              "user": {"username": "controller"}, "level": "Request", "stageTimestamp": "2026-11-20T10:00:00Z"}
    data = {f"key-{i}": "x" * 40 for i in range(width)}
    yield {**common, "auditID": f"{name}-create", "verb": "create", "responseStatus": {"code": 201},
           "requestObject": {"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                             "metadata": {"name": name, "namespace": "shop"}}}
    for i in range(changes - 1):
        yield {**common, "auditID": f"{name}-patch-{i}", "verb": "patch", "responseStatus": {"code": 200},
               "requestObject": {"data": {f"key-{i % width}": f"value-{i}"}}}


class Tailer:
    def __init__(self, work: Path) -> None:
        self.port, self.http = free_port(), free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with open(os.devnull, "wb") as null:
            self.proc = subprocess.Popen([sys.executable, "-m", "tailer.cli", "--listen", f"127.0.0.1:{self.port}",
                                          "--http-listen", f"127.0.0.1:{self.http}", "--log-level", "warning",
                                          "--data-dir", str(work), "--api-auth", "none", "--stdout", "false",
                                          "--configmaps", "false"], stdout=null, env=env)
        self.url = f"http://127.0.0.1:{self.http}"
        for _ in range(400):
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the tailer did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


class Sender:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.decoder, self.n = ff.Decoder(), 0

    def chunk(self, records: list[dict[str, Any]]) -> bytes:
        self.n += 1
        packed = b"".join(ff.encode_entry(ff.EventTime(1_763_629_200, j), r) for j, r in enumerate(records))
        return ff.encode_packed_forward("audit", packed, chunk=f"c{self.n}")

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


def quantiles(xs: list[float]) -> str:
    xs = sorted(xs)
    if not xs:
        return "n=0"
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))] * 1000  # noqa: E731
    return f"n={len(xs)} p50 {pick(0.5):.1f} ms  p99 {pick(0.99):.1f} ms  max {xs[-1] * 1000:.1f} ms"


def ack_latency(tailer: Tailer, seconds: float, busy: bool) -> str:
    stop = threading.Event()
    views: list[float] = []

    def ask() -> None:
        with httpx.Client(timeout=300) as http:
            while not stop.is_set():
                t = time.perf_counter()
                assert http.get(tailer.url + BUSY, params={"limit": "5000"}).status_code == 200
                views.append(time.perf_counter() - t)

    askers = [threading.Thread(target=ask) for _ in range(2 if busy else 0)]
    for thread in askers:
        thread.start()
    sender, pool, lat = Sender(tailer.port), list(events(5000, seed=3, big_every=0)), []
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


def api_under_ingest(tailer: Tailer, seconds: float) -> tuple[str, str, float]:
    stop = threading.Event()
    sent = [0]

    def ingest() -> None:
        sender = Sender(tailer.port)
        pool = list(events(20_000, seed=5))
        chunks = [sender.chunk([{**r, "auditID": f"load-{k}-{r['auditID']}"} for r in pool[k % 20 * 1000:][:1000]])
                  for k in range(60)]
        k = inflight = 0
        while not stop.is_set() or inflight:
            while not stop.is_set() and inflight < 4:
                sender.sock.sendall(chunks[k % len(chunks)])
                k, inflight = k + 1, inflight + 1
            sender.acks(1)
            inflight -= 1
            sent[0] += 1000

    loader = threading.Thread(target=ingest)
    loader.start()
    lists, histories = [], []
    t0 = time.monotonic()
    with httpx.Client(timeout=120) as http:
        while time.monotonic() - t0 < seconds:
            t = time.perf_counter()
            assert len(http.get(tailer.url + PREFIX + "/events", params={"namespace": "ns-7", "limit": "100"})
                       .json()["items"]) == 100
            lists.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert http.get(tailer.url + PREFIX + "/namespaces/shop/configmaps/small/versions").status_code == 200
            histories.append(time.perf_counter() - t)
    stop.set()
    loader.join()
    return quantiles(lists), quantiles(histories), sent[0] / (time.monotonic() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        tailer = Tailer(Path(work))
        try:
            sender = Sender(tailer.port)
            busy = list(busy_object(5000)) + list(busy_object(50, width=20, name="small"))
            for i in range(0, len(busy), 1000):
                sender.send(busy[i:i + 1000])
            base = list(events(20_000, seed=5))
            for i in range(0, len(base), 1000):
                sender.send(base[i:i + 1000])
            print(f"api_latency idle:        {ack_latency(tailer, args.seconds, busy=False)}")
            print(f"api_latency busy views:  {ack_latency(tailer, args.seconds, busy=True)}")
            lists, histories, rate = api_under_ingest(tailer, args.seconds)
            print(f"api_latency under ingest ({rate:,.0f} events/s): list of 100 {lists}; history of one object "
                  f"{histories}")
        finally:
            tailer.stop()


if __name__ == "__main__":
    main()
