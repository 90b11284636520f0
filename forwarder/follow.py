"""Owns the audit log files: the live file, the apiserver's rotated backups, watchdog wake-ups.

File events only wake us; ``stat`` is the truth. Every file is held open from the moment we see it
until it has been read to its end, so a rename or a delete cannot take unread data away, and a
held inode cannot be reused under us. Only when more than ``max_held_files`` files wait do we give
the oldest up, and report it as a gap with the bytes lost.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import re
import zlib
from collections import deque
from dataclasses import dataclass
from typing import IO, Any, cast

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .checkpoint import Checkpoint
from .lines import Line, Splitter

FINGERPRINT_BYTES = 1024
READ_BLOCK = 1024 * 1024


@dataclass(eq=False)
class Source:
    """One file being read: held open, with our read position and the line splitter."""

    path: str
    fh: IO[bytes]
    device: int
    inode: int
    compressed: bool
    splitter: Splitter
    pos: int  # bytes consumed from the file (the splitter may hold back a partial line)
    head: bytes = b""  # the first bytes of the content (up to FINGERPRINT_BYTES) as last seen
    last_size: int = 0  # size at the last poll: what a truncation may have taken
    raw: IO[bytes] | None = None  # the file under a gzip reader (GzipFile does not close it)
    _fingerprint: tuple[str, int] | None = None  # fixed once the head is complete or the file closed

    def fingerprint(self) -> tuple[str, int]:
        if self._fingerprint is not None:
            return self._fingerprint
        head = self.head if self.compressed else os.pread(self.fh.fileno(), FINGERPRINT_BYTES, 0)
        fp = hashlib.sha256(head).hexdigest(), len(head)
        if len(head) == FINGERPRINT_BYTES or self.compressed:
            self._fingerprint = fp
        return fp

    def identity(self) -> str:
        fp, _ = self.fingerprint()
        return f"{self.device}:{self.inode}:{fp[:16]}"

    def size(self) -> int:
        if self.compressed:
            return self.pos
        return os.fstat(self.fh.fileno()).st_size

    def checkpoint(self, offset: int) -> Checkpoint:
        fp, n = self.fingerprint()
        size = self.pos if self.fh.closed else self.size()
        return Checkpoint(self.path, self.device, self.inode, fp, n, offset, self.compressed, size)

    def close(self) -> None:
        if not self.fh.closed:
            self._fingerprint = self.fingerprint()  # acks may still name this file
            self.fh.close()
        if self.raw is not None:
            self.raw.close()


@dataclass(frozen=True)
class Read:
    source: Source
    lines: list[Line]
    oversized: list[Line]
    done: bool  # the source is finished (rotated away and read to its end)


@dataclass(frozen=True)
class Gap:
    path: str
    inode: int
    bytes_lost: int
    reason: str


class _Waker(FileSystemEventHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event, prefix: str) -> None:
        self.loop, self.event, self.prefix = loop, event, prefix

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = (str(event.src_path), str(getattr(event, "dest_path", "") or ""))
        if any(os.path.basename(p).startswith(self.prefix) for p in paths if p):
            self.loop.call_soon_threadsafe(self.event.set)


class Follower:
    def __init__(self, path: str, *, max_event_bytes: int, max_held_files: int, log: Any) -> None:
        self.path = os.path.abspath(path)
        self.folder = os.path.dirname(self.path)
        base = os.path.basename(self.path)
        self.stem, self.ext = os.path.splitext(base)
        self._backup = re.compile(rf"^{re.escape(self.stem)}-(.+){re.escape(self.ext)}(\.gz)?$")
        self.max_event_bytes = max_event_bytes
        self.max_held_files = max_held_files
        self.log = log
        self.sources: deque[Source] = deque()
        self.gaps: list[Gap] = []  # reported by the caller, then cleared
        self._wake = asyncio.Event()  # set from watchdog's thread
        self.changed = asyncio.Event()  # set after each poll: the reader may find new data
        self._observer: Any = None

    # ---- start-up -----------------------------------------------------------------------------

    def backups(self) -> list[str]:
        """Rotated files, oldest first (the apiserver's names sort by rotation time)."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        present = set(names)
        # while the apiserver gzips a backup both exist; the .log is complete, the .gz may not be yet
        found = [(m.group(1), n) for n in names
                 if (m := self._backup.match(n)) and not (n.endswith(".gz") and n[:-3] in present)]
        return [os.path.join(self.folder, n) for _, n in sorted(found)]

    def start(self, checkpoint: Checkpoint | None, read_from_head: bool) -> None:
        backups = self.backups()
        candidates = [*backups, self.path]
        if checkpoint is not None:
            index = self._find(candidates, checkpoint)
            if index is not None:
                first = self._open(candidates[index], checkpoint.offset)
                if first is not None:
                    self.sources.append(first)
                for path in candidates[index + 1 :]:
                    self._append(path, 0)
                self.log.info("resumed", file=candidates[index], offset=checkpoint.offset,
                              files=len(self.sources))
                return
            lost = max(checkpoint.size - checkpoint.offset, 0)
            if not checkpoint.finished:  # it may have grown after the checkpoint: lost is a lower bound
                self.gaps.append(Gap(checkpoint.path, checkpoint.inode, lost,
                                     "checkpointed file no longer exists (bytes_lost is a lower bound)"))
            else:
                self.log.info("checkpointed_file_gone", file=checkpoint.path,
                              note="nothing unread was lost; reading the files written since")
            for path in backups:
                try:
                    if os.stat(path).st_mtime >= checkpoint.written_at:
                        self._append(path, 0)
                except FileNotFoundError:
                    continue
            self._append(self.path, 0)
            return
        if read_from_head:
            for path in candidates:
                self._append(path, 0)
        else:
            self._append(self.path, None)

    def _find(self, candidates: list[str], cp: Checkpoint) -> int | None:
        for i in range(len(candidates) - 1, -1, -1):
            path = candidates[i]
            compressed = path.endswith(".gz")
            if cp.fingerprint_bytes == 0:
                return None  # an empty file has no identity (inodes are reused): go by time instead
            try:
                st = os.stat(path)
                if not compressed and (st.st_dev, st.st_ino) != (cp.device, cp.inode):
                    continue
                head = _read_head(path, compressed, cp.fingerprint_bytes)
            except (OSError, EOFError, zlib.error):
                continue
            if hashlib.sha256(head).hexdigest() == cp.fingerprint:
                return i
        return None

    def _append(self, path: str, offset: int | None) -> None:
        source = self._open(path, offset)
        if source is not None:
            self.sources.append(source)

    def _open(self, path: str, offset: int | None) -> Source | None:
        """Open ``path`` at ``offset`` (None: at the end, after the last complete line)."""
        compressed = path.endswith(".gz")
        try:
            raw = open(path, "rb")  # noqa: SIM115 - held until the file is read to its end
        except FileNotFoundError:
            return None
        st = os.fstat(raw.fileno())
        fh: IO[bytes] = raw
        if compressed:
            try:
                head = _read_head(path, True, FINGERPRINT_BYTES)
            except (OSError, EOFError, zlib.error) as exc:
                raw.close()
                self._unreadable(path, st.st_ino, exc)
                return None
            fh = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
        else:
            head = os.pread(raw.fileno(), FINGERPRINT_BYTES, 0)
        if offset is None:
            offset = _last_line_end(raw, st.st_size)
        elif not compressed and offset > st.st_size:
            self.log.warning("file_truncated", file=path, inode=st.st_ino, offset=offset, size=st.st_size)
            offset = 0
        if compressed:
            try:
                _skip(fh, offset)
            except (OSError, EOFError, zlib.error) as exc:
                fh.close()
                raw.close()
                self._unreadable(path, st.st_ino, exc)
                return None
        else:
            fh.seek(offset)
        self.log.info("file_opened", file=path, inode=st.st_ino, offset=offset, compressed=compressed)
        return Source(path, fh, st.st_dev, st.st_ino, compressed, Splitter(offset, self.max_event_bytes), offset,
                      head, st.st_size, raw=raw if compressed else None)

    def _unreadable(self, path: str, inode: int, exc: BaseException) -> None:
        self.log.error("file_unreadable", file=path, inode=inode, error=str(exc) or type(exc).__name__)
        self.gaps.append(Gap(path, inode, 0, f"unreadable: {exc}"))

    # ---- running ------------------------------------------------------------------------------

    def watch(self) -> None:
        loop = asyncio.get_running_loop()
        os.makedirs(self.folder, exist_ok=True)
        self._observer = Observer()
        self._observer.schedule(_Waker(loop, self._wake, self.stem), self.folder, recursive=False)
        self._observer.daemon = True
        self._observer.start()

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        while self.sources:
            self.sources.popleft().close()

    async def watch_loop(self, stop: asyncio.Event, interval: float, after_poll: Any) -> None:
        """Poll on every file event and at least every ``interval`` seconds, whatever the reader
        is doing: a reader paused by a full window must still see rotations before backups expire."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except TimeoutError:
                pass
            self._wake.clear()
            self.poll()
            after_poll()
            self.changed.set()

    def poll(self) -> None:
        """Reconcile with the folder: a new live file (rotation, recreate), or a truncated one."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        tail = self.sources[-1] if self.sources else None
        if tail is None or tail.compressed or (st.st_dev, st.st_ino) != (tail.device, tail.inode):
            if tail is not None:
                self.log.info("rotation_detected", file=self.path, old_inode=tail.inode, new_inode=st.st_ino)
                for path in self._missed_backups(tail):
                    self._append(path, 0)
            self._append(self.path, 0)
            self._bound_held_files()
        elif st.st_size < tail.pos:
            self._truncated(tail)
        else:
            tail.last_size = st.st_size
            if len(tail.head) < FINGERPRINT_BYTES and st.st_size > len(tail.head):
                tail.head = os.pread(tail.fh.fileno(), FINGERPRINT_BYTES, 0)

    def _truncated(self, tail: Source) -> None:
        """Copy-truncate: read what we had not yet read from the copy, then the file again from 0."""
        resume = tail.pos - tail.splitter.pending()  # just past the last complete line we took
        copy = self._find_copy(tail, resume)
        self.log.warning("file_truncated", file=tail.path, inode=tail.inode, offset=resume,
                         copy=copy.path if copy else None)
        if copy is not None:
            self.sources.insert(self.sources.index(tail), copy)
        else:
            lost = max(tail.last_size - resume, 0)
            if lost:
                self.gaps.append(Gap(tail.path, tail.inode, lost, "truncated before it was read, no copy found"))
        self._restart(tail)

    def _find_copy(self, tail: Source, resume: int) -> Source | None:
        if not tail.head:
            return None
        held = {(s.device, s.inode) for s in self.sources}
        for path in reversed(self.backups()):
            if path.endswith(".gz"):
                continue
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) in held or st.st_size < resume:
                    continue
                if _read_head(path, False, len(tail.head)) != tail.head:
                    continue
            except OSError:
                continue
            return self._open(path, resume)
        return None

    def _missed_backups(self, tail: Source) -> list[str]:
        """Files that were live and rotated away between two of our looks, oldest first."""
        held = {(s.device, s.inode) for s in self.sources}
        found: list[tuple[str, os.stat_result]] = []
        for path in self.backups():
            try:
                found.append((path, os.stat(path)))
            except FileNotFoundError:
                continue
        inodes = [(st.st_dev, st.st_ino) for _, st in found]
        if (tail.device, tail.inode) in inodes:
            after = found[inodes.index((tail.device, tail.inode)) + 1 :]
        else:  # our last live file is gone from the folder: go by modification time
            since = os.fstat(tail.fh.fileno()).st_mtime if not tail.compressed else 0.0
            after = [(p, st) for p, st in found if st.st_mtime >= since]
        heads = {s.head for s in self.sources if s.head}
        missed = [p for p, st in after if (st.st_dev, st.st_ino) not in held
                  and not (p.endswith(".gz") and _gz_head_in(p, heads))]
        for path in missed:
            self.log.warning("rotated_file_caught_up", file=path, note="rotated before we saw it live")
        return missed

    def _restart(self, source: Source) -> None:
        source.fh.seek(0)
        source.pos = 0
        source.splitter = Splitter(0, self.max_event_bytes)
        source.head, source.last_size, source._fingerprint = b"", 0, None  # new content, new identity

    def _bound_held_files(self) -> None:
        while len(self.sources) > self.max_held_files:
            dropped = self.sources.popleft()
            lost = max(dropped.size() - dropped.pos, 0) + dropped.splitter.pending()
            if lost:
                self.gaps.append(Gap(dropped.path, dropped.inode, lost, "too many rotated files waiting"))
            dropped.close()

    def read(self) -> Read | None:
        """The next lines from the oldest file; None when everything available has been read."""
        while self.sources:
            src = self.sources[0]
            try:
                data = src.fh.read(READ_BLOCK)
            except (EOFError, zlib.error, OSError) as exc:  # a damaged or cut gzip backup
                self._unreadable(src.path, src.inode, exc)
                data = b""
                if len(self.sources) == 1:
                    self.sources.popleft()
                    src.close()
                    return None
            if data:
                src.pos += len(data)
                lines, oversized = src.splitter.feed(data)
                return Read(src, lines, oversized, False)
            if len(self.sources) == 1:
                return None
            # a newer file exists, so this one is complete: its unterminated tail counts as a line
            last = src.splitter.finish()
            self.sources.popleft()
            src.close()
            self.log.info("file_finished", file=src.path, inode=src.inode, offset=src.pos)
            return Read(src, [last] if last and last.data.strip() else [], [], True)
        return None

    def lag_bytes(self) -> int:
        """Bytes in the files we hold that we have not read yet."""
        total = 0
        for src in self.sources:
            if not src.compressed:
                try:
                    total += max(src.size() - src.pos, 0)
                except OSError:
                    pass
        return total


def _gz_head_in(path: str, heads: set[bytes]) -> bool:
    try:
        head = _read_head(path, True, FINGERPRINT_BYTES)
    except (OSError, EOFError, zlib.error):
        return False
    return any(head.startswith(h) or h.startswith(head) for h in heads if h)


def _read_head(path: str, compressed: bool, n: int) -> bytes:
    if compressed:
        with gzip.open(path, "rb") as fh:
            return fh.read(n)
    with open(path, "rb") as fh:
        return fh.read(n)


def _skip(fh: IO[bytes], n: int) -> None:
    while n > 0:
        block = fh.read(min(n, READ_BLOCK))
        if not block:
            return
        n -= len(block)


def _last_line_end(fh: IO[bytes], size: int) -> int:
    """Where reading "from the end" starts: just after the last newline, never mid-line."""
    back = min(size, 1024 * 1024)
    if back == 0:
        return 0
    fh.seek(size - back)
    tail = fh.read(back)
    nl = tail.rfind(b"\n")
    return size - back + nl + 1 if nl >= 0 else size - back
