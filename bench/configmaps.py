"""The ConfigMap writer at scale: 10,000 tracked objects, 3 entries each, against the fake Kubernetes API.

Ours: the events are committed to an SQLite store first (as the tailer does) and the projection feeds
the writer from it (tailer/configmaps/projection.py); we time until every object's ConfigMap holds its
entries. The figure is ConfigMap writes (one object written once) per second. The baseline, in the same run: the writer as it was before the projection (loaded from git,
``--baseline-rev``), offered every event as the ingest pipeline did, timed for ``--window`` seconds
(it would need far longer to finish). Both use today's kube_audit/kube/aio.py against a fresh fake API in
its own process (tests/helpers/fakekube.py), with the tailer's defaults (flush interval 2 s, backlog
10,000 entries). Events: patches at RequestResponse level, a realistic custom resource in the response.

    .venv/bin/python bench/configmaps.py [--objects 10000] [--entries 3] [--runs 1] [--window 20]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kube_audit.kube.aio import AsyncKube  # noqa: E402
from tailer.configmaps.projection import Projection  # noqa: E402
from tailer.configmaps.writer import ConfigMapWriter  # noqa: E402
from tailer.metrics import TailerMetrics  # noqa: E402
from tailer.settings import ConfigMapSettings  # noqa: E402
from tailer.store import Store  # noqa: E402

FAKE = """
import sys, json, threading
from pathlib import Path
from tests.helpers.fakekube import FakeKube
fake = FakeKube()
fake.add_resource("example.com", "v1", "databases", "Database")
for i in range(int(sys.argv[1])):
    fake.create("example.com", "v1", "databases", f"ns-{i % 50}", f"db-{i}")
fake.write_kubeconfig(Path(sys.argv[2]))
fake.start()
print("ready", flush=True)
sys.stdin.read()
print(json.dumps({"writes": fake.writes("configmaps")}), flush=True)
fake.stop()
"""


def event(obj: int, n: int) -> dict[str, Any]:
    name, namespace = f"db-{obj}", f"ns-{obj % 50}"
    body = {"apiVersion": "example.com/v1", "kind": "Database",
            "metadata": {"name": name, "namespace": namespace, "uid": f"00000000-0000-4000-8000-{obj:012d}",
                         "resourceVersion": str(1000 + n), "generation": n + 1,
                         "labels": {"app.kubernetes.io/name": "orders", "team": f"team-{obj % 7}"}},
            "spec": {"replicas": n + 1, "version": "16.4", "storage": {"size": "20Gi", "class": "fast-ssd"},
                     "backup": {"schedule": "0 3 * * *", "retention": "14d"}, "resources": {
                         "requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}},
            "status": {"phase": "Running", "readyReplicas": n, "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-20T09:00:00Z"}]}}
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
            "auditID": f"{obj:08x}-{n:04x}-4000-8000-000000000000", "stage": "ResponseComplete",
            "requestURI": f"/apis/example.com/v1/namespaces/{namespace}/databases/{name}", "verb": "patch",
            "user": {"username": f"user-{obj % 13}@example.com", "groups": ["system:authenticated", "dba"]},
            "sourceIPs": ["10.1.2.3"], "userAgent": "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46",
            "objectRef": {"resource": "databases", "namespace": namespace, "name": name,
                          "apiGroup": "example.com", "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 200},
            "requestObject": {"spec": {"replicas": n + 1}}, "responseObject": body,
            "requestReceivedTimestamp": f"2026-11-20T09:{n:02d}:00.000000Z",
            "stageTimestamp": f"2026-11-20T09:{n:02d}:00.004000Z"}


class Fake:
    def __init__(self, objects: int, tmp: Path) -> None:
        self.kubeconfig = tmp / "kubeconfig"
        self.proc = subprocess.Popen([sys.executable, "-c", FAKE, str(objects), str(self.kubeconfig)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> int:
        out, _ = self.proc.communicate("", timeout=60)
        return int(json.loads(out.strip().splitlines()[-1])["writes"])


def settings() -> ConfigMapSettings:
    return ConfigMapSettings(service_account="system:serviceaccount:kube-audit:kube-audit-tailer")


def dropped(metrics: TailerMetrics) -> int:
    reg = metrics.registry
    return int(sum(reg.get_sample_value("tailer_configmap_dropped_entries_total", {"reason": r}) or 0
                   for r in ("backlog_full", "error", "gone")))


async def ours(objects: int, entries: int, tmp: Path) -> tuple[float, int]:
    fake = Fake(objects, tmp)
    store = await Store.open(str(tmp / "audit.db"))
    try:
        batch = [event(obj, n) for n in range(entries) for obj in range(objects)]
        for i in range(0, len(batch), 1000):
            await store.insert(batch[i : i + 1000])
        metrics = TailerMetrics()
        kube = await AsyncKube.connect(str(fake.kubeconfig))
        writer = ConfigMapWriter(kube, settings(), metrics)
        projection = Projection(store, writer, 1.0, metrics)
        await projection.start()
        start = time.perf_counter()
        tasks = [asyncio.create_task(writer.run()), asyncio.create_task(projection.run())]
        while projection.durable() < len(batch):
            await asyncio.sleep(0.05)  # sampling the progress of the run being measured
        elapsed = time.perf_counter() - start
        ok = metrics.registry.get_sample_value("tailer_configmap_writes_total", {"result": "ok"}) or 0
        tasks[1].cancel()
        await writer.stop(10.0)
        await asyncio.wait(tasks)
        lost = dropped(metrics)
    finally:
        await store.close()
        written = fake.stop()
    assert written >= objects, (written, objects)
    return ok / elapsed, lost


async def baseline(objects: int, entries: int, tmp: Path, rev: str, window: float) -> tuple[float, int] | None:
    try:
        source = subprocess.run(["git", "show", f"{rev}:tailer/configmaps/writer.py"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = tmp / "old_writer.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_writer", path)
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    sys.modules["old_writer"] = old  # dataclasses look their module up
    spec.loader.exec_module(old)
    fake = Fake(objects, tmp)
    try:
        metrics = TailerMetrics()
        kube = await AsyncKube.connect(str(fake.kubeconfig))
        writer = old.ConfigMapWriter(kube, settings(), metrics)
        task = asyncio.create_task(writer.run())
        start = time.perf_counter()
        for n in range(entries):  # the pipeline offered each chunk's records as they were acked
            for first in range(0, objects, 1000):
                writer.offer([event(obj, n) for obj in range(first, min(first + 1000, objects))])
        await asyncio.sleep(window)  # the measuring window
        ok = metrics.registry.get_sample_value("tailer_configmap_writes_total", {"result": "ok"}) or 0
        elapsed = time.perf_counter() - start
        lost = dropped(metrics)
        writer._pending.clear()  # the rest would take an hour; stop without writing it
        writer._count = 0
        await writer.stop(2.0)
        await task
    finally:
        fake.stop()
    return ok / elapsed, lost


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objects", type=int, default=10_000)
    p.add_argument("--entries", type=int, default=3, help="entries per object")
    p.add_argument("--runs", type=int, default=1, help="interleaved runs of each; medians printed")
    p.add_argument("--window", type=float, default=20.0, help="seconds the baseline is timed for")
    p.add_argument("--baseline-rev", default="8a254db", help="git revision of the old writer")
    p.add_argument("--no-baseline", action="store_true", help="measure ours only")
    a = p.parse_args()
    new: list[tuple[float, int]] = []
    old: list[tuple[float, int]] = []
    for _ in range(a.runs):
        with tempfile.TemporaryDirectory() as tmp:
            got = None if a.no_baseline else asyncio.run(baseline(a.objects, a.entries, Path(tmp), a.baseline_rev, a.window))
            if got is not None:
                old.append(got)
        with tempfile.TemporaryDirectory() as tmp:
            new.append(asyncio.run(ours(a.objects, a.entries, Path(tmp))))
    total = a.objects * a.entries
    print(f"ConfigMap writer, {a.objects:,} tracked objects, {total:,} entries (medians of {a.runs} runs)")
    print(f"{'writer':<34} {'objects written/s':>17} {'entries dropped':>16}")
    print(f"{'projection (ours)':<34} {statistics.median(r for r, _ in new):>17.1f} "
          f"{statistics.median(d for _, d in new):>16,.0f}")
    if old:
        print(f"{'in-memory observer (' + a.baseline_rev + ')':<34} {statistics.median(r for r, _ in old):>17.1f} "
              f"{statistics.median(d for _, d in old):>16,.0f}")
    else:
        print(f"baseline skipped: no git revision {a.baseline_rev}")


if __name__ == "__main__":
    main()
