"""follow.py on real files in a temp folder, driven step by step (no event loop needed)."""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

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


# ---- issue 15: silent loss ------------------------------------------------------------------------



def copytruncate(log: Path, compress: bool = False, keep: int = 5) -> None:
    """What logrotate's copytruncate does: shift the numbered copies, copy, truncate in place."""
    from tests.helpers.auditlog import CopyTruncateLog

    writer = CopyTruncateLog(str(log.parent), 1, keep, compress)
    writer.rotate()
    writer.close()



def test_copy_truncate_while_paused_and_regrown_past_our_offset(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(log, range(50))
    f = follower(log)
    f.start(None, True)
    assert drain(f) == list(range(50))
    write(log, range(50, 100))  # unread: the reader is paused by the tailer's outage
    f.poll()
    copytruncate(log)
    write(log, range(100, 300))  # the live file is soon longer than where we stopped reading
    f.poll()
    assert drain(f) == list(range(50, 300))
    assert f.gaps == [] and f.truncations == 1
    f.close()



def test_copy_truncate_seen_by_the_reader_without_a_poll(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(log, range(20))
    f = follower(log)
    f.start(None, True)
    assert drain(f) == list(range(20))
    write(log, range(20, 40))
    f.poll()
    copytruncate(log)
    write(log, range(40, 200))
    assert drain(f) == list(range(20, 200))
    f.close()



def test_two_truncations_between_two_looks_read_both_copies(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(log, range(10))
    f = follower(log)
    f.start(None, True)
    assert drain(f) == list(range(10))
    write(log, range(10, 20))
    f.poll()
    copytruncate(log, compress=True)
    write(log, range(20, 30))  # this generation was never seen live: it is only in audit.log.1.gz
    copytruncate(log, compress=True)
    write(log, range(30, 35))
    f.poll()
    assert drain(f) == list(range(10, 35))
    assert f.gaps == []
    f.close()



def test_truncation_without_a_copy_regrown_past_our_offset_is_a_gap(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(log, range(10))
    f = follower(log)
    f.start(None, True)
    drain(f)
    write(log, range(10, 20))
    f.poll()
    unread = log.stat().st_size - f.sources[0].pos
    os.truncate(log, 0)
    write(log, range(20, 100))
    f.poll()
    assert drain(f) == list(range(20, 100))
    assert [g.bytes_lost for g in f.gaps] == [unread]
    f.close()



def checkpoint_after(f: Follower, lines: int, tmp_path: Path) -> Any:
    """Read ``lines`` lines of the oldest file and checkpoint there, as an ack would (through the file)."""
    from forwarder import checkpoint

    read = f.read()
    assert read is not None
    cp = read.source.checkpoint(read.lines[lines - 1].end)
    checkpoint.save(str(tmp_path / "pos"), cp)
    f.close()
    return checkpoint.load(str(tmp_path / "pos"))



def test_restart_after_copytruncate_reads_the_rest_from_the_gzipped_copy(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(log, range(20))
    f = follower(log)
    f.start(None, True)
    cp = checkpoint_after(f, 10, tmp_path)  # the forwarder acked 10 lines, then was killed
    copytruncate(log, compress=True)
    write(log, range(20, 25))
    f = follower(log)
    f.start(cp, False)
    assert drain(f) == list(range(10, 25))
    assert f.gaps == []
    f.close()



def test_restart_after_the_checkpointed_backup_was_pruned_reads_every_newer_one(tmp_path: Path) -> None:
    from kube_audit.writer import RotatingLog

    writer = RotatingLog(str(tmp_path), 4000, 10, False)
    for i in range(100):
        writer.write(orjson.dumps(event(i, pad=20)) + b"\n")
    writer.close()
    backups = sorted(tmp_path.glob("audit-*.log"))
    assert len(backups) >= 4
    f = follower(tmp_path / "audit.log")
    f.start(None, True)
    first = drain_first_file(f)
    cp = checkpoint_after(f, 1, tmp_path)  # checkpoint written after the newer backups were last modified
    backups[0].unlink()  # pruned by --audit-log-maxbackup while we were down
    f = follower(tmp_path / "audit.log")
    f.start(cp, False)
    assert drain(f) == list(range(first, 100))  # every newer backup and the live file, in order
    assert [g.bytes_lost for g in f.gaps] == [cp.size - cp.offset]
    f.close()



def drain_first_file(f: Follower) -> int:
    """How many events the oldest file holds (read with a second follower, leaving ``f`` untouched)."""
    g = follower(Path(f.path))
    g.start(None, True)
    n = 0
    while (read := g.read()) is not None and not read.done:
        n += len(read.lines)
    g.close()
    return n



def test_held_file_limit_bounds_descriptors_not_data(tmp_path: Path) -> None:
    from kube_audit.writer import RotatingLog

    log = tmp_path / "audit.log"
    log.touch()
    f = Follower(str(log), max_event_bytes=1 << 20, max_held_files=2, log=Log())
    f.start(None, True)
    writer = RotatingLog(str(tmp_path), 2000, 50, True)  # gzips each backup after the rename
    held = []
    for i in range(200):
        writer.write(orjson.dumps(event(i, pad=20)) + b"\n")
        if i % 10 == 9:
            f.poll()
            held.append(sum(1 for s in f.sources if s.fh is not None))
    writer.close()
    f.poll()
    assert writer.rotations >= 10 and max(held) <= 2
    assert drain(f) == list(range(200))
    assert f.gaps == []
    f.close()



def test_a_gap_already_reported_is_not_reported_again_after_a_restart(tmp_path: Path) -> None:
    import dataclasses

    log = tmp_path / "audit.log"
    write(log, range(20))
    f = follower(log)
    f.start(None, True)
    cp = checkpoint_after(f, 5, tmp_path)
    log.unlink()  # rotated and deleted while we were down
    write(log, range(20, 25))
    f = follower(log)
    f.start(cp, False)
    assert len(f.gaps) == 1 and drain(f) == list(range(20, 25))
    f.close()
    f = follower(log)
    f.start(dataclasses.replace(cp, reported_gaps=tuple(f.reported) or (cp.fingerprint,)), False)
    assert f.gaps == []
    f.close()


def test_copy_truncate_of_a_file_that_was_empty_when_we_looked(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.touch()
    f = follower(log)
    f.start(None, False)  # the live file is empty: no head to compare with later
    write(log, range(10))
    copytruncate(log)  # written and copy-truncated before our next look
    write(log, range(10, 15))
    f.poll()
    assert drain(f) == list(range(15))
    f.close()


def three_copytruncates_while_paused(log: Path, keep: int) -> None:
    """Generation 0 (seqs 0-9) was read; three more are written and copy-truncated before our next look."""
    for gen in range(1, 4):
        copytruncate(log, keep=keep)
        write(log, range(gen * 10, gen * 10 + 10))


def test_truncation_seen_through_a_listing_torn_by_a_rotation_reads_every_copy(tmp_path: Path,
                                                                              monkeypatch: Any) -> None:
    """The listing is taken while logrotate shifts the copies: the oldest one (ours) is renamed to a name
    the listing does not have yet. That is no reason to lose the copies made since, nor ours."""
    from forwarder import files

    log = tmp_path / "audit.log"
    write(log, range(10))
    f = follower(log)
    f.start(None, True)
    assert drain(f) == list(range(10))
    three_copytruncates_while_paused(log, keep=50)  # .3 = ours (0-9), .2 = 10-19, .1 = 20-29, live = 30-39
    real, torn = os.listdir, ["audit.log", "audit.log.1", "audit.log.2"]  # listed before .2 -> .3
    calls: list[str] = []

    def listdir(path: Any) -> list[str]:
        calls.append(str(path))
        return torn if len(calls) == 1 else real(path)

    monkeypatch.setattr(files.os, "listdir", listdir)
    f.poll()
    assert drain(f) == list(range(10, 40))
    assert f.gaps == []
    f.close()


def test_truncation_whose_copy_was_pruned_reads_the_copies_since_and_reports_the_gap(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(log, range(10))
    f = follower(log)
    f.start(None, True)
    assert drain(f) == list(range(10))
    three_copytruncates_while_paused(log, keep=2)  # ours is pruned; .2 = 10-19, .1 = 20-29, live = 30-39
    f.poll()
    assert drain(f) == list(range(10, 40))
    assert len(f.gaps) == 1 and not f.gaps[0].exact  # what was written to ours after our last look is unknown
    f.close()


def when_live_opened(monkeypatch: Any, f: Follower, rotate: Callable[[], None]) -> None:
    """Run ``rotate`` once, just before the follower opens the live file (logrotate racing our look)."""
    real, armed = f.folder.open_plain, [True]

    def open_plain(cand: Any) -> Any:
        if cand.kind == "live" and armed:
            armed.clear()
            rotate()
        return real(cand)

    monkeypatch.setattr(f.folder, "open_plain", open_plain)


def test_truncated_again_while_we_reopen_the_live_file_reads_that_copy_too(tmp_path: Path,
                                                                           monkeypatch: Any) -> None:
    """logrotate truncates once more between our listing and our opening of the live file: the content the
    listing saw live (10-19) is then only in the newest copy, which that listing did not hold."""
    log = tmp_path / "audit.log"
    write(log, range(10))
    f = follower(log)
    f.start(None, True)
    assert drain(f) == list(range(10))
    copytruncate(log)
    write(log, range(10, 20))

    def rotate() -> None:
        copytruncate(log)
        write(log, range(20, 30))

    when_live_opened(monkeypatch, f, rotate)
    f.poll()
    assert drain(f) == list(range(10, 30))
    assert f.gaps == []
    f.close()


def test_a_file_that_looked_empty_truncated_twice_around_our_look_reads_both_copies(tmp_path: Path,
                                                                                     monkeypatch: Any) -> None:
    """The live file looked empty; it was written and copy-truncated (0-9), written again (10-19) and our look
    took that as its head; it is copy-truncated once more before we open it: 10-19 is only in the newest copy."""
    log = tmp_path / "audit.log"
    log.touch()
    f = follower(log)
    f.start(None, False)
    write(log, range(10))
    copytruncate(log)
    write(log, range(10, 20))

    def rotate() -> None:
        copytruncate(log)
        write(log, range(20, 30))

    when_live_opened(monkeypatch, f, rotate)
    f.poll()
    assert drain(f) == list(range(30))
    assert f.gaps == []
    f.close()


def test_truncated_again_while_we_reopen_a_live_file_that_was_empty_reads_that_copy_too(tmp_path: Path,
                                                                                        monkeypatch: Any) -> None:
    """As above, but the live file was empty when we listed (just truncated): its head cannot tell that it was
    written (10-19) and truncated again before we opened it; the new copy can."""
    log = tmp_path / "audit.log"
    write(log, range(10))
    f = follower(log)
    f.start(None, True)
    assert drain(f) == list(range(10))
    copytruncate(log)

    def rotate() -> None:
        write(log, range(10, 20))
        copytruncate(log)
        write(log, range(20, 30))

    when_live_opened(monkeypatch, f, rotate)
    f.poll()
    assert drain(f) == list(range(10, 30))
    assert f.gaps == []
    f.close()


def test_a_file_that_looked_empty_with_copies_renamed_while_we_read_their_heads(tmp_path: Path,
                                                                               monkeypatch: Any) -> None:
    """The live file looked empty; two copy-truncations (0-9, 10-19) happened before our look, and a third one
    shifts the copies while we read their heads: a copy whose head we could not read is still one to read."""
    log = tmp_path / "audit.log"
    log.touch()
    f = follower(log)
    f.start(None, False)
    write(log, range(10))
    copytruncate(log)
    write(log, range(10, 20))
    copytruncate(log)
    write(log, range(20, 30))
    real, armed = f.folder.head, [True]

    def head(cand: Any, n: int = 1024) -> Any:
        if cand.kind == "copy" and armed:
            armed.clear()
            copytruncate(log)
            write(log, range(30, 40))
        return real(cand, n)

    monkeypatch.setattr(f.folder, "head", head)
    f.poll()
    assert drain(f) == list(range(40))
    assert f.gaps == []
    f.close()


def test_a_plan_taken_as_it_is_after_the_last_try_still_reads_that_copy_later(tmp_path: Path,
                                                                               monkeypatch: Any) -> None:
    """Rotations overtook every try (here: one): the listing saw 10-19 live and already copied, the live file
    opened holds 20-29; that copy is newer than the live file's after_copy, so the next truncation reads it."""
    from forwarder import follow as follow_module

    monkeypatch.setattr(follow_module, "TRIES", 1)
    log = tmp_path / "audit.log"
    write(log, range(10))
    f = follower(log)
    f.start(None, True)
    assert drain(f) == list(range(10))
    copytruncate(log)
    write(log, range(10, 20))
    os.rename(tmp_path / "audit.log.1", tmp_path / "audit.log.2")  # logrotate copied 10-19, not truncated yet
    shutil.copyfile(log, tmp_path / "audit.log.1")

    def rotate() -> None:
        os.truncate(log, 0)  # ... and now it is
        write(log, range(20, 30))

    when_live_opened(monkeypatch, f, rotate)
    f.poll()
    copytruncate(log)
    write(log, range(30, 40))
    f.poll()
    assert sorted(set(drain(f))) == list(range(10, 40))
    assert f.gaps == []
    f.close()


def test_a_gzipped_copy_shifted_by_logrotate_while_planned_is_read_under_its_new_name(tmp_path: Path) -> None:
    """logrotate's copytruncate with compress shifts audit.log.1.gz to .2.gz, then compresses the new copy into
    .1.gz: in between, the name the listing saw is missing. That is a rename, not an unreadable file (no gap)."""
    log = tmp_path / "audit.log"
    (tmp_path / "audit.log.1.gz").write_bytes(gzip.compress(b"".join(orjson.dumps(event(i, pad=20)) + b"\n"
                                                                     for i in range(10))))
    write(log, range(10, 20))
    f = follower(log)
    cands = f.folder.scan() or []
    copy = next(c for c in cands if c.compressed)
    os.rename(tmp_path / "audit.log.1.gz", tmp_path / "audit.log.2.gz")  # between the listing and the open
    src = f._make(copy, 0, cands)
    assert src is not None and src.path == str(tmp_path / "audit.log.2.gz") and f.gaps == []
    head = src.head
    src.close()
    # the next copy compressed into the old name: still the listed file, by its inode, not the one named so now
    (tmp_path / "audit.log.1.gz").write_bytes(gzip.compress(b"".join(orjson.dumps(event(i, pad=20)) + b"\n"
                                                                     for i in range(20, 30))))
    src = f._make(copy, 0, cands)
    assert src is not None and src.path == str(tmp_path / "audit.log.2.gz") and src.head == head and f.gaps == []
    src.close()
    os.remove(tmp_path / "audit.log.2.gz")  # gone for good: that one is a gap
    assert f._make(copy, 0, cands) is None and [g.reason for g in f.gaps] == ["unreadable: cannot read its head"]
    f.close()


def test_a_copy_shifted_after_the_listing_is_still_recognised_by_its_inode(tmp_path: Path) -> None:
    """logrotate shifts audit.log.1.gz to .2.gz between our listing and our reading of its head: its head and
    size are read where it went, not from the new .1.gz (a copy of ours taken for another: a false gap under
    load, tests/fault's copytruncate-restart); the live file's head, once its path names another file, is None."""
    log = tmp_path / "audit.log"
    ours = b"".join(orjson.dumps(event(i, pad=20)) + b"\n" for i in range(10))
    (tmp_path / "audit.log.1.gz").write_bytes(gzip.compress(ours))
    write(log, range(10, 20))
    f = follower(log)
    cands = f.folder.scan() or []
    copy = next(c for c in cands if c.compressed)
    live = next(c for c in cands if c.kind == "live")
    os.rename(tmp_path / "audit.log.1.gz", tmp_path / "audit.log.2.gz")
    (tmp_path / "audit.log.1.gz").write_bytes(gzip.compress(b"".join(orjson.dumps(event(i, pad=20)) + b"\n"
                                                                     for i in range(20, 25))))
    assert f.folder.head(copy) == ours[:len(f.folder.head(copy) or b"")] and f.folder.head(copy)
    assert f.folder.content_size(copy) == len(ours)
    assert not f.folder.names(copy)
    os.rename(log, tmp_path / "audit.log.old")  # (a name no rotation kind here reads: only its inode moved)
    write(log, range(30, 32))
    assert f.folder.head(live) is None
    os.remove(tmp_path / "audit.log.2.gz")
    assert f.folder.head(copy) is None and f.folder.content_size(copy) == 0
    f.close()


def test_a_plan_made_before_the_live_file_was_truncated_again_is_made_again(tmp_path: Path) -> None:
    """The plan leaves out the copy of what the live file holds (read there). If logrotate copies and truncates
    it before the files are opened, that copy holds the only one: opened against the head the plan was made
    with, the plan is refused and made again (tests/fault copytruncate-outage, starved of CPU)."""
    log = tmp_path / "audit.log"
    write(log, range(0, 10))
    f = follower(log)
    cands = f.folder.scan() or []
    live = next(c for c in cands if c.kind == "live")
    planned = f.folder.head(live)
    shutil.copyfile(log, tmp_path / "audit.log.1")  # copytruncate, after the plan
    os.truncate(log, 0)
    write(log, range(10, 12))
    assert f._open_all([], cands, last=False, planned=planned) is None
    cands = f.folder.settled() or []  # a plan made now (the copy listed) is taken
    live = next(c for c in cands if c.kind == "live")
    queue = f._open_all([], cands, last=False, planned=f.folder.head(live))
    assert queue is not None and queue[-1] is not None
    for src in queue:
        if src is not None:
            src.close()
    f.close()


# ---- found by driving the follower against a copytruncate writer in random interleavings (each step of the
# writer, a rename, a part of a copy, a truncation, between two of the follower's own looks at the folder)


@pytest.mark.parametrize("gz", [False, True], ids=["plain copy", "gzipped copy"])
def test_a_copy_logrotate_shifts_twice_while_we_open_it_is_read_not_a_gap(gz: bool, tmp_path: Path,
                                                                          monkeypatch: Any) -> None:
    """Listed as .1, shifted to .2 before our open and to .3 right after the listing that found it at .2: it only
    moved (tests/fault copytruncate-outage, starved of CPU: a false gap of one copy, its events read later; a
    gzipped one was reported unreadable)."""
    log = tmp_path / "audit.log"
    ext = ".gz" if gz else ""
    data = b"".join(orjson.dumps(event(i, pad=20)) + b"\n" for i in range(10))
    (tmp_path / f"audit.log.1{ext}").write_bytes(gzip.compress(data) if gz else data)
    write(log, range(10, 12))
    f = follower(log)
    cands = f.folder.scan() or []
    copy = next(c for c in cands if c.kind == "copy")
    os.rename(tmp_path / f"audit.log.1{ext}", tmp_path / f"audit.log.2{ext}")
    real, armed = f.folder.scan, [True]

    def scan() -> Any:
        listing = real()
        if armed:
            armed.clear()
            os.rename(tmp_path / f"audit.log.2{ext}", tmp_path / f"audit.log.3{ext}")
        return listing

    monkeypatch.setattr(f.folder, "scan", scan)
    src = f._make(copy, 0, cands)
    assert src is not None and src.path == str(tmp_path / f"audit.log.3{ext}") and f.gaps == []
    src.close()
    f.close()


def test_the_copy_a_last_try_left_out_as_read_there_is_read_once_the_live_file_moved_on(tmp_path: Path,
                                                                                        monkeypatch: Any) -> None:
    """The plan left out a copy being made of what the live file held (10-19: read there); logrotate finished it
    and truncated the live file before we opened it, and the rotations overtook every try. That copy holds the
    only 10-19: it is newer than what the opened live file counts as read (``after_copy``), so it is read."""
    from forwarder import follow as follow_module

    monkeypatch.setattr(follow_module, "TRIES", 1)
    log = tmp_path / "audit.log"
    write(log, range(10))
    f = follower(log)
    f.start(None, True)
    assert drain(f) == list(range(10))
    copytruncate(log)  # 0-9 in .1
    write(log, range(10, 20))
    os.rename(tmp_path / "audit.log.1", tmp_path / "audit.log.2")  # logrotate is copying 10-19 into .1 ...
    (tmp_path / "audit.log.1").write_bytes(log.read_bytes()[:300])

    real, looks = f.folder.head, []

    def head(cand: Any, n: int = 1024) -> Any:
        if cand.kind == "live":
            looks.append(cand)
            if len(looks) == 2:  # the plan is made (the first look); before the files are opened:
                shutil.copyfile(log, tmp_path / "audit.log.1")  # ... done, and truncates
                os.truncate(log, 0)
                write(log, range(20, 30))
        return real(cand, n)

    monkeypatch.setattr(f.folder, "head", head)
    f.poll()
    f.poll()
    assert len(looks) >= 2
    assert sorted(set(drain(f))) == list(range(10, 30))
    assert f.gaps == []
    f.close()


def test_a_live_file_read_from_empty_and_truncated_right_after_is_read_from_its_copy(tmp_path: Path,
                                                                                    monkeypatch: Any) -> None:
    """Empty when opened (no head); 0-9 read; logrotate copies and truncates before we check the file (empty
    again: no head to tell). The head is what we read, not what the file holds at the check: the truncation is
    seen. Taken from the file at the check, the head stayed empty, and the next truncation (10-19, then 20-22:
    shorter than 0-9) found no copy of ours: a false gap (tests/fault copytruncate-outage)."""
    from forwarder.source import Source

    log = tmp_path / "audit.log"
    log.touch()
    f = follower(log)
    f.start(None, False)
    write(log, range(10))
    real, armed = Source.refresh, [True]

    def refresh(self: Source) -> bool:
        if armed and self.live:
            armed.clear()
            copytruncate(log)
        return real(self)

    monkeypatch.setattr(Source, "refresh", refresh)
    got = drain(f)
    write(log, range(10, 20))
    copytruncate(log)
    write(log, range(20, 23))
    f.poll()
    got += drain(f)
    assert sorted(set(got)) == list(range(23)) and f.gaps == []
    f.close()


def test_a_live_file_that_looked_empty_is_not_its_own_copy_when_it_is_replaced(tmp_path: Path,
                                                                               monkeypatch: Any) -> None:
    """Empty when opened; 0-9 read (its head now); while we look for copies made since, logrotate copies and
    truncates it twice (gzip). What we read is dropped (it may be the new content) and read again from the
    copies: the copy of 0-9 is one of them, not taken for the file we are leaving."""
    log = tmp_path / "audit.log"
    log.touch()
    f = follower(log)
    f.start(None, False)
    write(log, range(10))
    real, armed = f.folder.settled, [True]

    def settled(*args: Any) -> Any:
        if armed:
            armed.clear()
            copytruncate(log, compress=True)
            write(log, range(10, 20))
            copytruncate(log, compress=True)
            write(log, range(20, 30))
        return real(*args)

    monkeypatch.setattr(f.folder, "settled", settled)
    got = drain(f)
    f.poll()
    got += drain(f)
    assert sorted(set(got)) == list(range(30)) and f.gaps == []
    f.close()


def test_an_empty_live_file_written_and_copy_truncated_between_two_looks_is_read_now(tmp_path: Path) -> None:
    """Empty at both looks, so its head cannot tell; the copy made between them can, before any further write."""
    log = tmp_path / "audit.log"
    log.touch()
    f = follower(log)
    f.start(None, False)
    write(log, range(10))
    copytruncate(log, compress=True)
    f.poll()
    assert drain(f) == list(range(10)) and f.gaps == []
    f.close()


def test_a_size_read_after_the_head_is_not_taken_for_that_heads_content(tmp_path: Path, monkeypatch: Any) -> None:
    """Copy-truncated and written again (longer) right after we read the live file's head: the size we take
    is one of the content that head is of, so its copy is not short of it (no false gap at the truncation)."""
    log = tmp_path / "audit.log"
    write(log, range(10))
    f = follower(log)
    real, armed = os.pread, [True]

    def pread(fd: int, n: int, offset: int) -> bytes:
        out = real(fd, n, offset)
        if armed:
            armed.clear()
            copytruncate(log)
            write(log, range(10, 25))
        return out

    monkeypatch.setattr(os, "pread", pread)
    f.start(None, True)
    monkeypatch.undo()
    f.poll()
    assert sorted(set(drain(f))) == list(range(25)) and f.gaps == []
    f.close()


def test_a_backup_gzipped_and_removed_before_we_open_it_is_read_from_its_gz(tmp_path: Path) -> None:
    """The apiserver never renames a backup: its inode under another name is another file's (freed and reused
    at once, e.g. by the next backup). Gone by its name, it is read from the .gz made of it."""
    log = tmp_path / "audit.log"
    backup = tmp_path / "audit-2026-11-20T09-00-00.001.log"
    write(backup, range(10))
    write(log, range(10, 12))
    f = follower(log)
    cands = f.folder.scan() or []
    cand = next(c for c in cands if c.kind == "backup")
    (tmp_path / (backup.name + ".gz")).write_bytes(gzip.compress(backup.read_bytes()))
    os.rename(backup, tmp_path / "audit-2026-11-20T09-00-00.002.log")  # (its inode, as if reused by the next)
    src = f._make(cand, 0, cands)
    assert src is not None and src.compressed and src.path.endswith(".001.log.gz") and f.gaps == []
    src.close()
    f.close()


def test_backups_newer_than_the_live_files_listing_are_read_while_it_is_still_live(tmp_path: Path) -> None:
    """Rotations between our listing and our open, and the new audit.log got the listed one's inode (freed at
    once when its backup was gzipped and removed): the file we hold is live, yet backups appeared that are newer
    than any there was when it was listed. They are read, not taken as read."""
    log = tmp_path / "audit.log"
    write(log, range(10))
    f = follower(log)
    f.start(None, True)
    assert drain(f) == list(range(10))
    write(tmp_path / "audit-2026-11-20T09-00-00.001.log", range(100, 110))
    write(log, range(10, 20))
    f.poll()
    assert sorted(drain(f)) == list(range(10, 20)) + list(range(100, 110)) and f.gaps == []
    f.poll()
    assert drain(f) == []  # once
    f.close()


def test_a_position_saved_while_a_late_backup_is_queued_goes_back_to_it(tmp_path: Path) -> None:
    """Acked up to the live file's end, then an older backup is found late and queued before it: a position
    saved now (or at the next ack of the live file) is the backup's start, so a restart reads it, not past it."""
    log = tmp_path / "audit.log"
    write(log, range(10))
    f = follower(log)
    f.start(None, True)
    assert drain(f) == list(range(10))
    tail = f.sources[-1]
    write(tmp_path / "audit-2026-11-20T09-00-00.001.log", range(100, 110))
    write(log, range(10, 20))
    f.poll()
    assert f.late_queued
    back, offset = f.resume_point(tail, tail.splitter.offset)
    assert back.path.endswith("09-00-00.001.log") and offset == 0
    drain(f)
    assert f.resume_point(tail, 5) == (tail, 5)  # read: the position goes on from the live file again
    f.close()


def test_a_truncation_while_the_last_copy_is_still_queued_reads_no_older_copy_again(tmp_path: Path) -> None:
    """The copy the live file counts from (``after_copy``) is still queued when the live file is truncated
    again, so it is not among the copies to plan from; the older ones were read. They are not read again
    (tests/fault copytruncate-outage at full size: 5,423 events sent twice)."""
    log = tmp_path / "audit.log"
    write(log, range(10))
    f = follower(log)
    f.start(None, True)
    got = drain(f)
    copytruncate(log)  # .1: 0-9, read
    write(log, range(10, 20))
    f.poll()
    got += drain(f)
    copytruncate(log)  # .1: 10-19, read; queued (its rest) until the reader gets to it
    write(log, range(20, 30))
    f.poll()
    copytruncate(log)  # .1: 20-29
    write(log, range(30, 40))
    f.poll()
    got += drain(f)
    assert sorted(got) == list(range(40)) and f.gaps == []
    f.close()
