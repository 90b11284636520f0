"""Real processes, real files: rotation under load, SIGKILL of the forwarder, a tailer outage."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.daemon import cpu_seconds
from tests.conftest import python_env, wait_for

pytestmark = pytest.mark.fault


def writer(folder: Path, events: int, *, start: int = 0, rate: float = 0, rotate: int = 2_000_000,
           backups: int = 5, compress: bool = False) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "tests.helpers.auditlog", str(folder), "--events", str(events), "--start", str(start),
            "--rotate-bytes", str(rotate), "--max-backups", str(backups), "--rate", str(rate)]
    if compress:
        args.append("--compress")
    return subprocess.Popen(args, env=python_env(), stdout=subprocess.PIPE)


def keys(tailer) -> list[tuple[str, str]]:
    return [(r["auditID"], r["stage"]) for r in tailer.records()]


def expected(n: int, start: int = 0) -> list[tuple[str, str]]:
    return [(f"id-{i:09d}", "ResponseComplete") for i in range(start, start + n)]


def test_rotation_by_rename_under_load(start_tailer, start_forwarder, tmp_path: Path) -> None:
    n = 100_000
    tailer = start_tailer()
    log = tmp_path / "audit.log"
    log.touch()
    fwd = start_forwarder(tailer.port, log, "--max-held-files", "64")
    w = writer(tmp_path, n, rate=20_000)
    out, _ = w.communicate(timeout=300)
    assert w.returncode == 0 and int(out.split()[-1]) >= 15  # rotations really happened
    wait_for(lambda: len(tailer.records()) >= n, timeout=300, what=f"{n} events")
    assert keys(tailer) == expected(n)  # all of them, once, in order
    assert fwd.metric("forwarder_gaps_total") == 0


def test_sigkill_ten_times_loses_nothing(start_tailer, start_forwarder, tmp_path: Path) -> None:
    n = 60_000
    window, chunk = 4, 500
    tailer = start_tailer()
    log = tmp_path / "audit.log"
    log.touch()
    args = ("--max-inflight-chunks", str(window), "--chunk-events", str(chunk), "--max-held-files", "64")
    fwd = start_forwarder(tailer.port, log, *args)
    w = writer(tmp_path, n, rate=6_000, rotate=1_000_000, backups=50)
    rng = random.Random(1234)
    marks = sorted(rng.sample(range(n // 20, n - n // 20), 10))
    for mark in marks:
        wait_for(lambda m=mark: len(tailer.records()) >= m, timeout=120, what=f"{mark} records before a kill")
        fwd.kill()
        fwd = start_forwarder(tailer.port, log, *args)
    w.communicate(timeout=300)
    wait_for(lambda: set(keys(tailer)) >= set(expected(n)), timeout=300, what="every event after 10 SIGKILLs")
    counts = Counter(keys(tailer))
    duplicates = sum(c - 1 for c in counts.values())
    print(f"\nsigkill x10: {n} events, {duplicates} duplicates (bound {10 * window * chunk})")
    assert set(counts) == set(expected(n))
    assert duplicates <= 10 * window * chunk  # at most the unacked window each time


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_tailer_outage_of_30s(start_tailer, start_forwarder, tmp_path: Path) -> None:
    tailer = start_tailer()
    log = tmp_path / "audit.log"
    log.touch()
    fwd = start_forwarder(tailer.port, log, "--backoff-max", "2s", "--ack-timeout", "5s")
    w = writer(tmp_path, 10_000, rate=10_000)
    w.communicate(timeout=120)
    wait_for(lambda: len(tailer.records()) >= 10_000, timeout=120, what="events before the outage")
    tailer.stop()
    outage_start = time.monotonic()
    w = writer(tmp_path, 40_000, start=10_000, rate=20_000)
    w.communicate(timeout=120)
    assert fwd.proc is not None
    cpu_before = cpu_seconds(fwd.proc.pid)
    idle_from = time.monotonic()
    wait_for(lambda: time.monotonic() - outage_start >= 30, timeout=60, what="the 30 s outage")
    idle = time.monotonic() - idle_from
    cpu_idle = cpu_seconds(fwd.proc.pid) - cpu_before
    rss = _rss_mb(fwd.proc.pid)
    print(f"\noutage: forwarder used {cpu_idle:.2f} CPU s in {idle:.1f} s of waiting, RSS {rss:.0f} MB")
    assert cpu_idle < 0.1 * idle  # waiting, not spinning
    assert rss < 250  # the files are the buffer, not memory
    tailer.start()
    wait_for(lambda: len(tailer.records()) >= 50_000, timeout=120, what="all events after the outage")
    assert sorted(set(keys(tailer))) == expected(50_000)
    assert fwd.metric("forwarder_reconnects_total") >= 1
