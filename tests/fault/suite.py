"""The forwarder's fault scenarios with real processes and real files, at full size, with a table:

    python -m tests.fault.suite [--size full|small] [--only NAME ...] [--keep]

Every scenario runs a real audit-tailer (SQLite store), real audit-forwarder processes (killed with SIGKILL
where a restart matters) and a real writer process that rotates like the kube-apiserver (rename to
audit-<timestamp>.log, maxbackup pruning) or like logrotate's copytruncate. The store is the truth: ``lost``
counts written events missing from it, ``dupes`` rows stored twice (the store keys on auditID and stage),
``resent`` the repeats the store dropped. ``gaps``/``gap bytes`` are what the forwarder reported; ``lost bytes``
what was really lost. pytest runs the small size of each (tests/fault/test_scenarios.py).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from tests.conftest import ForwarderProcess, TailerProcess, python_env, wait_for
from tests.helpers.auditlog import event

MB = 1024 * 1024
SETTLE = [3600.0]  # seconds to wait for the forwarder to catch up (--settle-timeout)


@dataclass
class Row:
    scenario: str
    events: int = 0
    lost: int = 0
    lost_bytes: int = 0
    dupes: int = 0
    resent: int = 0
    gaps: int = 0
    gap_bytes: int = 0
    rss_mb: float = 0.0
    seconds: float = 0.0
    note: str = ""
    seen_lost: int = 0  # lost events that were on disk while a forwarder ran


@dataclass
class Run:
    """One scenario's processes and files."""

    tmp: Path
    pad: int
    tailer: TailerProcess | None = None
    fwd: ForwarderProcess | None = None
    rss_kb: int = 0
    fwd_args: tuple[str, ...] = ()
    stored: set[int] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    @property
    def log(self) -> Path:
        return self.tmp / "audit.log"

    def start_tailer(self) -> TailerProcess:
        if self.tailer is None:
            self.tailer = TailerProcess(self.tmp, "--stdout", "false", "--log-level", "info")
        self.tailer.start()
        return self.tailer

    def start_forwarder(self, *args: str) -> ForwarderProcess:
        assert self.tailer is not None
        self.fwd_args = args or self.fwd_args
        self.fwd = ForwarderProcess(self.tmp, self.tailer.port, self.log, "--log-level", "info",
                                    "--backoff-max", "500ms", *self.fwd_args).start()
        # /healthz answers before the follower has looked at the folder; a file rotated in between would be
        # "already there" for a forwarder without a checkpoint (it starts at the end of the live file), so
        # the scenarios write only once the start position is checkpointed
        wait_for((self.tmp / "audit-forwarder.pos").exists, timeout=60, what="the forwarder's start position")
        return self.fwd

    def _sample(self) -> None:
        if self.fwd is not None and self.fwd.proc is not None and self.fwd.proc.poll() is None:
            for line in Path(f"/proc/{self.fwd.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.rss_kb = max(self.rss_kb, int(line.split()[1]))

    def kill_forwarder(self) -> None:
        assert self.fwd is not None
        self._sample()
        self.fwd.kill()

    def write(self, events: int, start: int = 0, *, rate: float = 0, rotate: int = 5 * MB, backups: int = 50,
              copytruncate: bool = False, compress: bool = False) -> None:
        args = [sys.executable, "-m", "tests.helpers.auditlog", str(self.tmp), "--events", str(events),
                "--start", str(start), "--rotate-bytes", str(rotate), "--max-backups", str(backups),
                "--rate", str(rate), "--pad", str(self.pad)]
        args += ["--copytruncate"] if copytruncate else []
        args += ["--compress"] if compress else []
        subprocess.run(args, env=python_env(), check=True, stdout=subprocess.DEVNULL, timeout=3600)

    def on_disk(self) -> set[int]:
        """The events in the log's files now (backups, gzipped or not, and the live file)."""
        seqs = set()
        for path in self.tmp.glob("audit*.log*"):
            try:
                data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
            except (OSError, EOFError):
                continue
            seqs.update(orjson.loads(line)["seq"] for line in data.splitlines() if line.strip())
        return seqs

    def position(self) -> dict:
        return json.loads((self.tmp / "audit-forwarder.pos").read_text())

    def caught_up(self) -> bool:
        """Everything on disk read and acked: the checkpoint is at the end of the live file."""
        try:
            pos, st = self.position(), self.log.stat()
        except (OSError, ValueError):
            return False
        return pos["inode"] == st.st_ino and pos["offset"] == st.st_size and st.st_size > 0

    def finish(self, name: str, n: int, first: int = 0, note: str = "") -> Row:
        try:
            wait_for(self.caught_up, timeout=SETTLE[0], what=f"{name}: the forwarder caught up")
        except AssertionError:  # a forwarder that lost track of the live file never catches up: count anyway
            note = (note + "; " if note else "") + "never caught up"
        assert self.tailer is not None and self.fwd is not None
        self._sample()
        resent = int(self.tailer.metric("tailer_store_duplicates_total"))
        self.fwd.stop()
        self.tailer.stop()
        db = sqlite3.connect(self.tmp / f"data-{self.tailer.port}" / "audit.db")
        rows, distinct = db.execute("SELECT count(*), count(DISTINCT audit_id || stage) FROM audit_events").fetchone()
        self.stored = stored = {int(a[3:]) for (a,) in db.execute("SELECT audit_id FROM audit_events")}
        db.close()
        missing = [i for i in range(first, first + n) if i not in stored]
        size = len(orjson.dumps(event(0, self.pad))) + 1  # every test event has the same size
        gaps = [e for e in self.fwd.logs() if e.get("event") == "gap"]
        return Row(name, n, len(missing), len(missing) * size, rows - distinct, resent, len(gaps),
                   sum(int(g["bytes_lost"]) for g in gaps), self.rss_kb / 1024, time.monotonic() - self.started, note)


# ---- the scenarios: (size) -> Row --------------------------------------------------------------


def copytruncate_outage(run: Run, full: bool) -> Row:
    """Issue 15: a 10 s tailer outage at 3,000 events/s, logrotate copytruncate every 5 MB."""
    n, rate, rotate = (30_000, 3000.0, 5 * MB) if full else (3000, 0.0, 400_000)
    run.start_tailer()
    run.log.touch()
    run.start_forwarder()
    assert run.tailer is not None
    run.tailer.stop()  # the outage lasts as long as the writer (10 s at full size)
    run.write(n, rate=rate, rotate=rotate, backups=50, copytruncate=True)
    run.start_tailer()
    return run.finish("copytruncate during a 10 s outage", n, note=f"{n // 3000} s at 3,000/s" if full else "")


def copytruncate_restart(run: Run, full: bool) -> Row:
    """The forwarder is SIGKILLed; the log is copy-truncated (gzipped copies) while it is down."""
    n, rotate = (30_000, 5 * MB) if full else (3000, 400_000)
    run.start_tailer()
    run.log.touch()
    run.start_forwarder()
    run.write(n // 3, rotate=rotate, copytruncate=True, compress=True)
    wait_for(run.caught_up, timeout=600, what="the first third")
    run.kill_forwarder()
    run.write(n - n // 3, start=n // 3, rotate=rotate, copytruncate=True, compress=True)
    run.start_forwarder()
    return run.finish("copytruncate while killed (gzip copies)", n)


def rename_outage(run: Run, full: bool) -> Row:
    """Issue 15: a 5-minute outage at 2,000 events/s (617k events), rename every 50 MB, 23 backups kept."""
    n, rotate = (617_388, 50 * MB) if full else (20_000, 1 * MB)
    run.start_tailer()
    run.log.touch()
    run.start_forwarder()  # the default --max-held-files 16
    assert run.tailer is not None
    run.tailer.stop()
    run.write(n, rotate=rotate, backups=100)  # written as fast as the writer goes, not over 5 minutes
    run.start_tailer()
    return run.finish("rename rotation, long outage", n, note="writer unthrottled" if full else "")


def restart_pruned(run: Run, full: bool) -> Row:
    """SIGKILL while reading an old backup; that backup is pruned before the restart; newer ones stay."""
    n, rotate = (60_000, 5 * MB) if full else (6000, 300_000)
    run.write(n, rotate=rotate, backups=100)
    run.start_tailer()
    run.start_forwarder("--read-from-head", "true", "--max-inflight-chunks", "1", "--chunk-events", "100")
    assert run.tailer is not None
    wait_for(lambda: run.tailer is not None and run.tailer.metric("tailer_store_events_inserted_total") >= 100,
             what="the first events")
    run.tailer.stop()
    run.kill_forwarder()
    checkpointed = Path(run.position()["path"])
    if checkpointed != run.log:  # it was reading a backup: the apiserver's maxbackup prunes it
        checkpointed.unlink()
    run.start_tailer()
    run.start_forwarder("--read-from-head", "true")
    return run.finish("restart after the checkpointed file was pruned", n,
                      note="lost = the pruned file's unacked events")


def quiet_restart(run: Run, full: bool) -> Row:
    """A forwarder that started at the end of the live file and read nothing is killed; lines follow."""
    n = 50_000 if full else 2000
    run.write(100, start=10**8)  # already there before the forwarder starts: not to be sent
    run.start_tailer()
    run.start_forwarder()
    run.kill_forwarder()
    run.write(n, rotate=2 * MB)
    run.start_forwarder()
    return run.finish("quiet restart", n)


def sigkill_dense(run: Run, full: bool) -> Row:
    """Ten SIGKILLs (four at small size), each followed by rotations and maxbackup pruning of files never read: real loss,
    which must be reported, once, with exact bytes where the forwarder knew the file."""
    per, rotate, backups, kills = (20_000, 2 * MB, 3, 10) if full else (1500, 150_000, 2, 4)
    run.start_tailer()
    run.log.touch()
    run.start_forwarder("--max-held-files", "4")
    seq, on_disk = 0, set()
    for i in range(kills):
        run.write(per, start=seq, rotate=rotate, backups=backups)
        seq += per
        if i % 2:  # every other time killed while reading, else once everything was acked
            wait_for(run.caught_up, timeout=600, what="caught up before the kill")
        run.kill_forwarder()
        run.write(per, start=seq, rotate=rotate, backups=backups)  # while it is down: older files pruned
        seq += per
        on_disk |= run.on_disk()  # what the restarted forwarder can see: none of it may go missing
        run.start_forwarder()
    row = run.finish(f"{kills} SIGKILLs with pruning while down", seq)
    row.seen_lost = len(on_disk - run.stored)
    row.note = (f"{row.seen_lost:,} lost were on disk at a restart, then pruned before the forwarder got to them "
                "(in the gaps); the rest were in files rotated and pruned while no forwarder ran (never seen)")
    return row


SCENARIOS: dict[str, Callable[[Run, bool], Row]] = {
    "copytruncate-outage": copytruncate_outage,
    "copytruncate-restart": copytruncate_restart,
    "rename-outage": rename_outage,
    "restart-pruned": restart_pruned,
    "quiet-restart": quiet_restart,
    "sigkill-dense": sigkill_dense,
}


def run_scenario(name: str, tmp: Path, full: bool) -> Row:
    run = Run(tmp, pad=1700 if name == "rename-outage" else 700)
    try:
        return SCENARIOS[name](run, full)
    finally:
        for proc in (run.fwd, run.tailer):
            if proc is not None:
                proc.stop()


def table(rows: list[Row]) -> str:
    head = ["scenario", "events", "lost", "lost bytes", "dupes in store", "resent", "gaps", "gap bytes",
            "peak RSS MB", "s", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.scenario, f"{r.events:,}", f"{r.lost:,}", f"{r.lost_bytes:,}", f"{r.dupes:,}", f"{r.resent:,}",
                 str(r.gaps), f"{r.gap_bytes:,}", f"{r.rss_mb:.0f}", f"{r.seconds:.0f}", r.note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fault.suite", description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("full", "small"), default="full")
    p.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=None)
    p.add_argument("--keep", action="store_true", help="keep the scenario folders (logs, stores)")
    p.add_argument("--settle-timeout", type=float, default=3600.0,
                   help="seconds to wait for the forwarder to catch up before counting (default 3600)")
    a = p.parse_args(argv)
    SETTLE[0] = a.settle_timeout
    rows = []
    base = Path(tempfile.mkdtemp(prefix="fault-suite-"))
    for name in a.only or list(SCENARIOS):
        tmp = base / name
        tmp.mkdir()
        row = run_scenario(name, tmp, a.size == "full")
        rows.append(row)
        sys.stdout.write(table([row]).splitlines()[-1] + "\n")
        sys.stdout.flush()
        if not a.keep:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
    sys.stdout.write("\n" + table(rows) + "\n")
    if a.keep:
        sys.stdout.write(f"\nfolders kept in {base}\n")
    else:
        os.rmdir(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
