"""The follower against logrotate's copytruncate and the apiserver's rename rotation in random interleavings,
on real files.

The writer is a generator of single filesystem steps: appending lines, removing the oldest copy, each rename
that shifts the copies (``.1`` -> ``.2`` ...), each part of a copy (``shutil.copyfile`` writes the copy in
place, so a listing can see it half made; a gzipped one appears by a rename), the truncation. Between two
of the follower's own looks at the folder (a listing, a head, an open, a ``pread``) the writer takes a few
steps or none, as a starved forwarder beside a busy logrotate would see it (``_renamer``: the apiserver's
rotation, its backups gzipped and removed, whose freed inodes the next files get at once). Every line written must be read,
and nothing reported as a gap: with 400 copies kept, nothing is ever pruned, so any gap is a false alarm.
Seeded: a failure names its seed, and ``run(seed, compress, ...)`` replays it; ``FOLLOW_SEEDS_FROM`` and
``FOLLOW_SEEDS_TO`` run other seeds.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import pytest

from forwarder.checkpoint import Checkpoint
from forwarder.follow import Follower
from forwarder.source import Read
from tests.helpers.auditlog import event

SEEDS = range(int(os.environ.get("FOLLOW_SEEDS_FROM", "0")), int(os.environ.get("FOLLOW_SEEDS_TO", "150")))  # more: env
EVENTS = (20, 200)
BURST = (2, 40)  # lines written between two rotations, at most
KEEP = 400  # copies kept: none is pruned, so nothing may be lost and no gap reported


class _Log:
    def __getattr__(self, level: str) -> Any:
        return lambda name, **kw: None


def _writing(events: int, burst: int, rng: random.Random, out: Callable[[], IO[bytes]],
             rotate: Callable[[], Iterator[None]]) -> Iterator[None]:
    """Bursts of lines to the live file (``out()``), each followed by a rotation half the time."""
    seq = 0
    while seq < events:
        for _ in range(min(rng.randint(1, burst), events - seq)):
            out().write(orjson.dumps(event(seq, pad=200)) + b"\n")
            out().flush()
            seq += 1
            if rng.random() < 0.3:
                yield
        yield
        if rng.random() >= 0.5:
            yield from rotate()


def _in_parts(path: Path, data: bytes, part: int, rng: random.Random) -> Iterator[None]:
    """``data`` written to ``path`` in place, ``part`` bytes at a time: a listing can see it half made."""
    with path.open("wb") as dst:
        for at in range(0, len(data), part):
            dst.write(data[at : at + part])
            dst.flush()
            if rng.random() < 0.5:
                yield
    yield


def _writer(folder: Path, events: int, burst: int, rng: random.Random, compress: bool) -> Iterator[None]:
    """logrotate copytruncate beside an appending apiserver; yields after each step."""
    log = folder / "audit.log"
    ext = ".gz" if compress else ""

    def copy(n: int) -> Path:
        return folder / f"audit.log.{n}{ext}"

    def rotate() -> Iterator[None]:
        if copy(KEEP).exists():
            os.remove(copy(KEEP))
            yield
        for n in range(KEEP - 1, 0, -1):
            if copy(n).exists():
                os.rename(copy(n), copy(n + 1))
                yield
        data = log.read_bytes()
        if compress:
            tmp = folder / "audit.log.1.gz.tmp"
            tmp.write_bytes(gzip.compress(data))
            yield
            os.rename(tmp, copy(1))
            yield
        else:
            yield from _in_parts(copy(1), data, 4096, rng)
        os.truncate(log, 0)
        yield

    with log.open("ab") as out:  # O_APPEND, kept across truncations, as the apiserver keeps its descriptor
        yield from _writing(events, burst, rng, lambda: out, rotate)


def _renamer(folder: Path, events: int, burst: int, rng: random.Random, compress: bool) -> Iterator[None]:
    """The apiserver's rotation (lumberjack): close, rename to ``audit-<time>.log``, create a new live file;
    with ``compress`` the backup is gzipped beside itself (the .gz written in parts), then removed."""
    log = folder / "audit.log"
    live = [log.open("ab")]
    rotations = [0]

    def rotate() -> Iterator[None]:
        live[0].close()
        rotations[0] += 1
        backup = folder / f"audit-2026-11-20T09-00-00.{rotations[0]:03d}.log"
        os.rename(log, backup)
        yield
        live[0] = log.open("ab")
        yield
        if compress:
            yield from _in_parts(folder / (backup.name + ".gz"), gzip.compress(backup.read_bytes()), 512, rng)
            os.remove(backup)
            yield

    try:
        yield from _writing(events, burst, rng, lambda: live[0], rotate)
    finally:
        live[0].close()


def run(seed: int, compress: bool, folder: Path, monkeypatch: Any, rename: bool = False,
        restarts: bool = False) -> tuple[list[int], list[Any], list[bytes]]:
    """(the written events never read, the gaps reported, the lines read that were never written). ``restarts``: up to 3 times the follower is
    dropped (a SIGKILL) and a new one starts from the last position, saved as the forwarder saves it once
    everything read is acked; what was read before counts as delivered."""
    rng = random.Random(seed)
    log = folder / "audit.log"
    log.touch()
    f = Follower(str(log), max_event_bytes=1 << 20, max_held_files=16, log=_Log())
    f.start(None, False)
    steps = (_renamer if rename else _writer)(folder, rng.randint(*EVENTS), rng.randint(*BURST), rng, compress)
    pace = rng.choice([0.05, 0.2, 0.5, 0.9])
    done = [False]

    def step() -> None:
        if not done[0] and rng.random() < pace:
            for _ in range(rng.randint(1, 6)):
                if next(steps, StopIteration) is StopIteration:
                    done[0] = True
                    return

    def interleaved(real: Any) -> Any:
        def look(*args: Any, **kw: Any) -> Any:
            step()
            out = real(*args, **kw)
            step()
            return out
        return look

    def hooked(f: Follower) -> Follower:
        for name in ("scan", "head", "open_plain", "content_size", "names"):
            monkeypatch.setattr(f.folder, name, interleaved(getattr(f.folder, name)))
        return f

    position: list[Checkpoint | None] = [None]

    acked_at: list[tuple[Any, int] | None] = [None]

    def saved(f: Follower) -> Follower:  # Forwarder.after_poll: a first file's start is saved at once; a file
        if f.new_start and f.sources:  # found late, older than the last ack's, takes the position back to it
            f.new_start = False
            position[0] = f.sources[0].checkpoint(f.sources[0].splitter.offset)
        if f.late_queued:
            f.late_queued = False
            if acked_at[0] is not None and (back := f.resume_point(*acked_at[0]))[0] is not acked_at[0][0]:
                position[0] = back[0].checkpoint(back[1])
        return f

    def acked(f: Follower, got: Read) -> None:  # ForwarderApp._on_ack, every line read acked at once
        src = got.source
        target, offset = src, got.lines[-1].end if got.lines else src.splitter.offset
        if got.done and f.sources and f.sources[0].identifiable():
            target, offset = f.sources[0], f.sources[0].start
        acked_at[0] = (target, offset)
        target, offset = f.resume_point(target, offset)
        position[0] = target.checkpoint(offset)
        if got.done and target is src:
            position[0] = dataclasses.replace(position[0], finished=True)

    f = saved(hooked(f))
    monkeypatch.setattr(os, "pread", interleaved(os.pread))
    read: set[int] = set()
    gaps: list[Any] = []
    torn: list[bytes] = []  # lines that are not what was written: half a line, gzip bytes

    def take() -> bool:
        got = f.read()
        if got is not None:
            for line in got.lines:
                try:
                    read.add(orjson.loads(line.data)["seq"])
                except orjson.JSONDecodeError:
                    torn.append(line.data[:80])
            acked(f, got)
        return got is not None

    try:
        kills = 0
        while not done[0]:
            if restarts and kills < 3 and rng.random() < 0.02:
                kills += 1
                gaps += f.gaps
                f.close()
                f = Follower(str(log), max_event_bytes=1 << 20, max_held_files=16, log=_Log())
                f = saved(hooked(f))
                f.start(position[0], False)
                saved(f)
            elif rng.random() < 0.3:
                f.poll()
                saved(f)
            else:
                take()
            step()
        for _ in range(3):  # the writer is done: what is left is read
            f.poll()
            saved(f)
            while take():
                pass
    finally:
        monkeypatch.undo()
        f.close()
    written: set[int] = set()
    for path in folder.glob("audit*.log*"):
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        written.update(orjson.loads(line)["seq"] for line in data.splitlines() if line.strip())
    return sorted(written - read), gaps + list(f.gaps), torn


@pytest.mark.parametrize("restarts", [False, True], ids=["", "killed and restarted"])
@pytest.mark.parametrize(("rename", "compress"), [(False, False), (False, True), (True, False), (True, True)],
                         ids=["copytruncate", "copytruncate, gzipped copies", "rename", "rename, gzipped backups"])
def test_every_line_is_read_and_no_gap_is_reported_in_any_interleaving(rename: bool, compress: bool, restarts: bool,
                                                                       tmp_path: Path, monkeypatch: Any) -> None:
    failed = []
    for seed in SEEDS:
        folder = tmp_path / str(seed)
        folder.mkdir()
        missing, gaps, torn = run(seed, compress, folder, monkeypatch, rename, restarts)
        if missing or gaps or torn:
            failed.append((seed, missing[:10], [(g.reason, g.bytes_lost) for g in gaps], torn[:1]))
    assert failed == []
