"""Ingest with 200 open watches vs none (issue 13's watch row), before and after, in the same run.

A tailer with its SQLite store takes ``--events`` realistic events (bench/events.py) as compressed
1,000-event chunks, 4 in flight, acks awaited (as bench/store_e2e.py); stdout goes to /dev/null. With
``--watchers``, a client process first opens that many watches on the tailer's API (aiohttp; each run
prints its CPU per event, taken from the cores the tailer shares with it), each with its own filter, as
the product is used: teams watching their namespace, or one kind of change in it (12 namespaces x 16
filters: all, verb=update|patch|create|delete, resource=pods|configmaps|deployments|secrets|services|
leases|events, level=RequestResponse, code=404, user=alice@example.com, name=web), and
8 cluster-wide ones (resource=secrets, nodes, user=each human, verb=delete, resource=deployments&verb=patch).
The lines each watch receives are counted. The tailer runs as deployed, its API on an HTTPS port of its
own (since the API process: in a child process; a tree from before: on the tailer's event loop), so CPU and
peak RSS are of its whole process tree. Reported: events/s, tailer CPU per event (from /proc), peak RSS
(VmHWM, summed over the tree) and how many watch lines arrived of how many the filters select.

    python -m bench.watchers [--events 30000] [--watchers 200] [--runs 3] [--before d0b19d0] [--mix all]

``--mix all``: every watcher unfiltered (the issue's first measurement): 200 copies of every event.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from bench.daemon import cpu_seconds, peak_rss_mb, serving_pair, tree_cpu, tree_peak_rss_mb  # noqa: E402
from bench.events import NAMESPACES, many  # noqa: E402
from bench.store_e2e import chunks, connect, send_all  # noqa: E402
from bench.store_perf import unpack  # noqa: E402
from bench.synth import free_port  # noqa: E402
from kube_audit.contract import PREFIX  # noqa: E402

PATH = PREFIX + "/auditevents"
VARIANTS: list[dict[str, str]] = [
    {}, {"verb": "update"}, {"verb": "patch"}, {"verb": "create"}, {"verb": "delete"}, {"resource": "pods"},
    {"resource": "configmaps"}, {"resource": "deployments"}, {"resource": "secrets"}, {"resource": "services"},
    {"resource": "leases"}, {"resource": "events"}, {"level": "RequestResponse"}, {"code": "404"},
    {"user": "alice@example.com"}, {"name": "web"},
]
CLUSTER_WIDE: list[dict[str, str]] = [
    {"resource": "secrets"}, {"resource": "nodes"}, {"user": "alice@example.com"}, {"user": "bob@example.com"},
    {"user": "carol@example.com"}, {"user": "dave@example.com"}, {"verb": "delete"},
    {"resource": "deployments", "verb": "patch"},
]


def filters(n: int, mix: str = "filtered") -> list[dict[str, str]]:
    if mix == "all":  # every watcher takes every event (kubectl get auditevents -A --watch)
        return [{}] * n
    every = [{"namespace": ns, **v} for ns in NAMESPACES for v in VARIANTS] + CLUSTER_WIDE
    return [every[i % len(every)] for i in range(n)]


def selects(flt: dict[str, str], e: dict[str, Any]) -> bool:
    ref = e.get("objectRef") or {}
    have = {"namespace": ref.get("namespace", ""), "resource": ref.get("resource", ""), "name": ref.get("name", ""),
            "verb": e.get("verb", ""), "level": e.get("level", ""), "user": (e.get("user") or {}).get("username", ""),
            "code": str((e.get("responseStatus") or {}).get("code", ""))}
    return all(have[k] == v for k, v in flt.items())


async def client(base: str, n: int, counts: Path, mix: str, ca: str) -> None:
    """Open ``n`` watches, say "ready", count lines into ``counts`` until killed."""
    import ssl

    import aiohttp

    got = [0] * n
    tls = ssl.create_default_context(cafile=ca)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=tls),
                                     timeout=aiohttp.ClientTimeout(total=None)) as session:
        responses = [await session.get(base + PATH, params={"watch": "true", **flt}) for flt in filters(n, mix)]
        assert all(r.status == 200 for r in responses), [r.status for r in responses if r.status != 200][:3]

        async def read(i: int, resp: Any) -> None:
            while chunk := await resp.content.readany():
                got[i] += chunk.count(b"\n")

        tasks = [asyncio.create_task(read(i, r)) for i, r in enumerate(responses)]
        print("ready", flush=True)
        while True:
            counts.write_text(str(sum(got)))
            await asyncio.sleep(0.2)
            if any(t.done() for t in tasks):
                for t in tasks:
                    if t.done() and t.exception():
                        raise t.exception()  # type: ignore[misc]


class PythonWatches:
    """The watches in one Python process (aiohttp, ``client`` above). A curl process per watch instead (in C)
    took 15 µs of CPU per event where this one took 20: not worth 200 processes."""

    def __init__(self, base: str, n: int, mix: str, ca: str, counts: Path) -> None:
        self.counts = counts
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.watchers", "--client", base, "--watchers", str(n),
                                      "--counts", str(counts), "--mix", mix, "--ca", ca],
                                     stdout=subprocess.PIPE, text=True, cwd=str(HERE), env=dict(os.environ, PYTHONPATH=str(HERE)))
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def delivered(self) -> int:
        return int(self.counts.read_text() or 0) if self.counts.exists() else 0

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def metric(http: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def run(tree: Path, data: list[tuple[str, bytes]], n: int, watchers: int, expected: int, mix: str,
        profile: str | None = None) -> dict[str, float]:
    """One case in a fresh tailer; ``profile``: a py-spy flame graph of the tailer while it ingests, there."""
    port, http, api = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "wb") as null:
        env = dict(os.environ, PYTHONPATH=str(tree), KUBECONFIG=os.devnull)
        cert, key = serving_pair(Path(tmp))  # the API on its own HTTPS port, as deployed
        proc = subprocess.Popen([sys.executable, "-m", "tailer.cli", "--listen", f"127.0.0.1:{port}", "--http-listen",
                                 f"127.0.0.1:{http}", "--log-level", "warning", "--data-dir", str(Path(tmp) / "data"),
                                 "--store", "sqlite", "--configmaps", "false", "--api-auth", "none", "--api-listen",
                                 f"127.0.0.1:{api}", "--api-tls-cert", str(cert), "--api-tls-key", str(key)],
                                stdout=null, env=env, cwd=str(tree))
        watch = spy = None
        counts = Path(tmp) / "counts"
        try:
            sock = connect(port)
            if watchers:
                base = f"https://127.0.0.1:{api}"
                watch = PythonWatches(base, watchers, mix, str(cert), counts)
                for _ in range(200):
                    if metric(http, "tailer_api_watchers") == watchers:
                        break
                    time.sleep(0.05)
            if profile:
                spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(proc.pid),
                                        "--output", profile, "--rate", "200", "--nonblocking", "--subprocesses", "--threads",
                                        "--format", "flamegraph" if profile.endswith(".svg") else "raw"], stdout=null, stderr=null)
            idle = tree_cpu(proc.pid)  # the tailer and its API process
            idle_ingest = cpu_seconds(proc.pid)  # the tailer's own process (ingest, the store's writer)
            client = watch.cpu() if watch is not None else 0.0
            sender = time.process_time()
            elapsed = send_all(sock, data)
            cpu = tree_cpu(proc.pid) - idle
            ingest = cpu_seconds(proc.pid) - idle_ingest
            sender = time.process_time() - sender  # this process: the chunks' sender
            client = watch.cpu() - client if watch is not None else 0.0  # the bench's watch client
            delivered = 0
            if watchers:  # how far the watchers got: wait until their count stops growing (at most 30 s)
                last, still = -1, 0
                for _ in range(150):
                    time.sleep(0.2)
                    delivered = watch.delivered() if watch is not None else 0
                    still = still + 1 if delivered == last else 0
                    if delivered >= expected or still >= 10:
                        break
                    last = delivered
            # the API process's CPU until the last line arrived (it may still work after ingest ended)
            api_all = tree_cpu(proc.pid) - cpu_seconds(proc.pid) - (idle - idle_ingest)
            rss = tree_peak_rss_mb(proc.pid)
            api_rss = rss - peak_rss_mb(proc.pid)
            behind = metric(http, "tailer_api_watchers_behind_total") if watchers else 0
            cut = metric(http, "tailer_api_watchers_cut_off_total") if watchers else 0
        finally:
            if spy is not None:
                spy.send_signal(2)  # SIGINT: py-spy writes its output and ends
                spy.wait(60)
            if watch is not None:
                watch.stop()
            proc.terminate()
            proc.wait(30)
    return {"eps": n / elapsed, "us": cpu / n * 1e6, "rss": rss, "delivered": delivered, "behind": behind, "cut": cut,
            "client_us": client / n * 1e6, "sender_us": sender / n * 1e6, "ingest_us": ingest / n * 1e6,
            "api_us": (cpu - ingest) / n * 1e6, "api_rss": api_rss,
            "api_line_us": api_all / delivered * 1e6 if delivered else 0.0}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=30_000)
    p.add_argument("--watchers", type=int, default=200)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--before", default="d0b19d0", help="git revision of the baseline ('' = none)")
    p.add_argument("--mix", choices=("filtered", "all"), default="filtered",
                   help="filtered: the mix above; all: every watcher unfiltered")
    p.add_argument("--profile", help="py-spy profile of the last run's tailer with watchers: a flame graph (.svg) or collapsed stacks")
    p.add_argument("--client", help=argparse.SUPPRESS)
    p.add_argument("--counts", help=argparse.SUPPRESS)
    p.add_argument("--ca", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.client:
        asyncio.run(client(a.client, a.watchers, Path(a.counts), a.mix, a.ca))
        return 0
    records = list(many(a.events))
    expected = sum(selects(f, e) for f in filters(a.watchers, a.mix) for e in records)
    data = chunks(a.events)
    print(f"{a.events} events, {a.watchers} watchers ({a.mix}) selecting {expected:,} watch lines in all", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"after": HERE}
        if a.before:
            trees = {"before": unpack(a.before, Path(tmp) / "before"), **trees}
        got: dict[tuple[str, int], list[dict[str, float]]] = {}
        for r in range(a.runs):
            for name, tree in trees.items():
                for w in (0, a.watchers):
                    last = r == a.runs - 1 and name == "after" and w
                    out = run(tree, data, a.events, w, expected, a.mix, a.profile if last else None)
                    got.setdefault((name, w), []).append(out)
                    print(f"run {r + 1} {name:6} {w:3} watchers: {out['eps']:>7,.0f} events/s, {out['us']:4.0f} µs "
                          f"tailer CPU/event ({out['ingest_us']:.0f} ingest, {out['api_us']:.0f} API process), peak RSS "
                          f"{out['rss']:5.0f} MB ({out['api_rss']:.0f} the API process), {out['delivered']:,} of "
                          f"{expected if w else 0:,} watch lines (watchers fell behind the ring {out['behind']:.0f} times, "
                          f"{out['cut']:.0f} cut off; the API process until the last line: {out['api_line_us']:.1f} µs per line); on the same cores meanwhile: the bench's sender {out['sender_us']:.0f} µs/event, "
                          f"its watch client {out['client_us']:.0f} µs/event", flush=True)
    print(f"\nmedians of {a.runs} runs, {a.events} events, SQLite store")
    for name in trees:
        med = {w: {k: statistics.median(o[k] for o in got[(name, w)]) for k in ("eps", "us", "rss", "delivered")}
               for w in (0, a.watchers)}
        z, w = med[0], med[a.watchers]
        print(f"{name:6} none {z['eps']:>7,.0f} ev/s {z['us']:4.0f} µs/ev RSS {z['rss']:4.0f} MB | {a.watchers} watchers "
              f"{w['eps']:>7,.0f} ev/s {w['us']:4.0f} µs/ev RSS {w['rss']:5.0f} MB, {w['delivered']:,.0f}/{expected:,} "
              f"lines | throughput {w['eps'] / z['eps']:.2f}x, RSS +{w['rss'] - z['rss']:.0f} MB "
              "(goal >= 0.9x, +< 100 MB)")
        # each run's pair (none, then watchers, back to back): steadier than the ratio of medians on a machine
        # whose speed drifts between runs
        pairs = list(zip(got[(name, 0)], got[(name, a.watchers)], strict=True))
        print(f"{name:6} per run, the pair's throughput ratio: median "
              f"{statistics.median(b['eps'] / z['eps'] for z, b in pairs):.2f}x; CPU the watchers add per event: median "
              f"{statistics.median(b['us'] - z['us'] for z, b in pairs):.0f} µs (the API process: "
              f"{statistics.median(b['api_us'] for _, b in pairs):.0f} µs; until the last line arrived "
              f"{statistics.median(b['api_line_us'] for _, b in pairs):.1f} µs per line; peak RSS "
              f"{statistics.median(b['api_rss'] - z['api_rss'] for z, b in pairs):+.0f} MB); the bench's own watch client beside "
              f"them on the same cores: median {statistics.median(b['client_us'] for _, b in pairs):.0f} µs per event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
