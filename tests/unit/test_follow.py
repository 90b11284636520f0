"""follow.py on real files in a temp folder, driven step by step (no event loop needed)."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import Any

import orjson

from fluent_forward import EventTime
from forwarder.follow import Follower
from forwarder.lines import to_entry
from tests.helpers.auditlog import event


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda name, **kw: self.events.append((name, kw))


def write(path: Path, seqs: range) -> None:
    with path.open("ab") as fh:
        for i in seqs:
            fh.write(orjson.dumps(event(i, pad=20)) + b"\n")


def drain(f: Follower) -> list[int]:
    out = []
    while (read := f.read()) is not None:
        out += [orjson.loads(line.data)["seq"] for line in read.lines]
    return out


def follower(path: Path) -> Follower:
    return Follower(str(path), max_event_bytes=1 << 20, max_held_files=16, log=Log())


def test_copy_truncate_while_behind_reads_the_rest_from_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(log, range(50))
    f = follower(log)
    f.start(None, True)
    assert drain(f) == list(range(50))
    write(log, range(50, 100))  # not read yet: the tailer is away, say
    f.poll()
    shutil.copy(log, tmp_path / "audit-2026-11-20T09-00-00.000.log")
    os.truncate(log, 0)
    write(log, range(100, 110))
    f.poll()
    assert drain(f) == list(range(50, 110))
    assert f.gaps == []
    f.close()


def test_truncation_without_a_copy_is_a_gap_with_the_bytes(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(log, range(10))
    f = follower(log)
    f.start(None, True)
    drain(f)
    write(log, range(10, 20))
    f.poll()
    unread = log.stat().st_size - f.sources[0].pos
    os.truncate(log, 0)
    write(log, range(20, 22))
    f.poll()
    assert drain(f) == [20, 21]
    assert [g.bytes_lost for g in f.gaps] == [unread]
    f.close()


def test_a_backup_being_gzipped_is_read_once_and_a_cut_gzip_never_raises(tmp_path: Path) -> None:
    a, b = tmp_path / "audit-2026-01-01T00-00-00.000.log", tmp_path / "audit-2026-01-01T00-01-00.000.log"
    write(a, range(0, 10))
    write(b, range(10, 20))
    write(tmp_path / "audit.log", range(20, 30))
    full = gzip.compress(b.read_bytes())
    for partial in (full, full[: len(full) // 2]):
        (tmp_path / (b.name + ".gz")).write_bytes(partial)
        f = follower(tmp_path / "audit.log")
        f.start(None, True)
        assert drain(f) == list(range(30))
        f.close()


def test_a_rotation_missed_and_already_gzipped_is_still_read(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(log, range(10))
    f = follower(log)
    f.start(None, True)
    assert drain(f) == list(range(10))
    os.rename(log, tmp_path / "audit-2026-01-01T00-00-01.000.log")
    write(log, range(10, 20))  # live for a moment, rotated and gzipped before we looked
    second = tmp_path / "audit-2026-01-01T00-00-02.000.log"
    os.rename(log, second)
    (tmp_path / (second.name + ".gz")).write_bytes(gzip.compress(second.read_bytes()))
    second.unlink()
    write(log, range(20, 25))
    f.poll()
    assert drain(f) == list(range(10, 25))
    f.close()


def test_checkpoint_of_an_empty_file_resumes_by_time_not_by_a_reused_inode(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.touch()
    f = follower(log)
    f.start(None, True)
    cp = f.sources[0].checkpoint(0)
    f.close()
    for i, ts in enumerate(("01", "02")):
        write(log, range(i * 10, i * 10 + 10))
        backup = tmp_path / f"audit-2026-01-01T00-00-{ts}.000.log"
        os.rename(log, backup)
        (tmp_path / (backup.name + ".gz")).write_bytes(gzip.compress(backup.read_bytes()))
        backup.unlink()
    write(log, range(20, 30))
    f = follower(log)
    f.start(cp, False)
    assert drain(f) == list(range(30))
    f.close()


def test_timestamps_outside_event_time_fall_back_instead_of_failing() -> None:
    for stamp in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "1969-12-31T23:59:59Z"):
        assert to_entry(orjson.dumps({"stageTimestamp": stamp}), EventTime(7))
