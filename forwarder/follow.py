"""Follows the audit log: the live file, the apiserver's rotated backups, logrotate's copies, watchdog wake-ups.

File events only wake us; ``stat`` and the files' heads are the truth. The files are the buffer: every file
of the log is queued, oldest first, from the moment it is seen until it has been read to its end.
``max_held_files`` bounds the descriptors, never the data: the oldest files (the next to be pruned) and the
live one are held open, so a rename or a delete takes nothing unread; the others are closed and re-opened
by their content when their turn comes (also once gzipped). Only a file that is really gone is a gap,
reported once with the bytes we knew it held.

A truncation of the live file (copytruncate) is seen when its size drops or its head changes, whether we
are reading it or paused; what we had not read is then read from the copy, and what no copy holds is a gap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from collections import deque
from typing import IO, Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .checkpoint import Checkpoint
from .files import (
    FINGERPRINT_BYTES,
    FOLLOW_TRIES,
    HEAD_ERRORS,
    Candidate,
    Folder,
    rotated_files,
    same_content,
)
from .lines import Splitter
from .source import Gap, Read, Source, head_and_size, last_line_end

__all__ = ["FINGERPRINT_BYTES", "Follower", "Gap", "Read", "Source"]


class _Waker(FileSystemEventHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event, prefix: str) -> None:
        self.loop, self.event, self.prefix = loop, event, prefix

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = (str(event.src_path), str(getattr(event, "dest_path", "") or ""))
        if any(os.path.basename(p).startswith(self.prefix) for p in paths if p):
            self.loop.call_soon_threadsafe(self.event.set)


TRIES = 5  # plans made again when a rotation overtook them (logrotate rotates in well under a millisecond)


def _related(head: bytes | None, other: bytes | None) -> bool:
    """Two heads of the same content (one may have been read while the file was shorter)."""
    if not head or not other:
        return False
    return head.startswith(other) or other.startswith(head)


def _holds(head: bytes | None, cp: Checkpoint) -> bool:
    """``head`` (a file's first bytes, at least the checkpoint's fingerprint's) is of the checkpointed content."""
    part = (head or b"")[: cp.fingerprint_bytes]
    return len(part) == cp.fingerprint_bytes and _fp(part) == cp.fingerprint


def _fp(head: bytes | None) -> str:
    return hashlib.sha256(head).hexdigest() if head else ""


class Follower:
    def __init__(self, path: str, *, max_event_bytes: int, max_held_files: int, log: Any,
                 exclude: tuple[str, ...] = ()) -> None:
        self.folder = Folder(path, exclude)
        self.path = self.folder.live
        self.max_event_bytes = max_event_bytes
        self.max_held_files = max_held_files
        self.log = log
        self.sources: deque[Source] = deque()
        self.gaps: list[Gap] = []  # reported by the caller, then cleared
        self.reported: dict[str, None] = {}  # fingerprints of files already reported as gaps, oldest first
        self.folder_missing = False
        self.new_start = False  # a first file was queued: the caller checkpoints its start at once
        self.late_queued = False  # an older file was queued before the one being read: see resume_point
        self.rotations = 0
        self.truncations = 0
        self._pending_start: tuple[Checkpoint | None, bool] | None = None
        self._wake = asyncio.Event()  # set from watchdog's thread
        self.changed = asyncio.Event()  # set after each poll: the reader may find new data
        self._observer: Any = None

    # ---- queueing -----------------------------------------------------------------------------

    def _make(self, cand: Candidate, offset: int | None, cands: list[Candidate]) -> Source | None:
        """A queued file at ``offset`` (None: after the last complete line); a plain one is opened at once,
        by its inode, so that its head and identity are of the same file even if it is renamed meanwhile."""
        raw: IO[bytes] | None = None
        if cand.compressed:
            named = self.folder.names(cand)
            for _ in range(FOLLOW_TRIES):
                if named:
                    break
                # logrotate shifted it (audit.log.1.gz -> .2.gz) since the listing: the same file, by its inode,
                # under its new name (the name it had is missing until the next copy is compressed into it, then
                # names that one); it is read there, since a compressed file is opened by name when read. It
                # may be shifted again while we look (each look is an untorn listing); gone when none holds it
                now = next((c for c in self.folder.settled() or () if c.compressed and
                            (c.device, c.inode) == (cand.device, cand.inode)), None)
                if now is None:
                    break
                cand, named = now, self.folder.names(now)
            # (a name that is another file's now, or nothing's, is not to be read)
            head = self.folder.head(cand) if named else None
            size = self.folder.content_size(cand)
            if head is None:
                self._unreadable(cand.path, cand.inode, "cannot read its head", size, self._last())
                return None
        else:
            opened = self.folder.open_plain(cand)
            if opened is None and cand.kind == "backup":  # the apiserver gzipped it since, and removed it
                gz = next((c for c in self.folder.settled() or () if c.compressed and c.path == cand.path + ".gz"),
                          None)
                if gz is not None:
                    return self._make(gz, offset, cands)
            if opened is None:  # gone between the listing and now
                if cand.kind != "live" and cand.size:
                    self.gaps.append(Gap(cand.path, cand.inode, cand.size, "deleted before it could be opened",
                                         after=self._last()))
                return None
            raw, path = opened
            for _ in range(TRIES):
                if (seen := head_and_size(raw.fileno())) is not None:
                    break
            head, size = seen or (os.pread(raw.fileno(), FINGERPRINT_BYTES, 0), 0)  # (0: a lower bound)
            cand = dataclasses.replace(cand, path=path)
        if offset is None:
            offset = last_line_end(raw) if raw is not None else 0
        if not cand.compressed and offset > size:
            self.log.warning("file_truncated", file=cand.path, inode=cand.inode, offset=offset, size=size)
            offset = 0
        copies = [c for c in cands if c.kind == "copy"]
        after = cand.key if cand.kind == "backup" else self.folder.newest_backup_key(cands)
        after_copy = _fp(head) if cand.kind == "copy" else self._newest_copy(copies, head) if cand.kind == "live" else ""
        src = Source(cand.path, cand.device, cand.inode, cand.compressed, Splitter(offset, self.max_event_bytes),
                     offset, offset, after, after_copy, cand.kind == "live", head, size, at=(cand.device, cand.inode))
        if raw is not None:
            src.adopt(raw, cand.path, offset)
            self.log.info("file_opened", file=cand.path, inode=cand.inode, offset=offset, compressed=False)
        return src

    def _newest_copy(self, copies: list[Candidate], live_head: bytes) -> str:
        """The fingerprint of the newest copy not of the live file's content (one being made now is not older)."""
        heads = (self.folder.head(c) for c in reversed(copies))
        return next((_fp(h) for h in heads if h is not None and not _related(live_head, h)), "")

    def _push(self, src: Source | None) -> None:
        if src is not None:
            if not self.sources:
                self.new_start = True
            self.sources.append(src)

    def _balance(self) -> None:
        """Hold the oldest files and the live one open; close the others (they are re-opened by content)."""
        keep, last = max(1, self.max_held_files - 1), len(self.sources) - 1
        for i, src in enumerate(list(self.sources)):
            if src.ended:
                src.close()
            elif i < keep or i == last:
                if src.fh is None:
                    self._reopen(src)
            elif src.fh is not None:
                src.close()

    def _reopen(self, src: Source) -> bool:
        cands = self.folder.scan() or []
        for cand in (c for c in reversed(cands) if not c.compressed and (c.device, c.inode) == src.at):
            opened = self.folder.open_plain(cand)
            if opened is None:
                continue
            raw, path = opened
            if src.head and not os.pread(raw.fileno(), len(src.head), 0) == src.head:
                raw.close()  # the inode was reused by another file
                continue
            src.adopt(raw, path, src.pos)
            self.log.info("file_opened", file=path, inode=src.inode, offset=src.pos, compressed=False)
            return True
        match = None
        if src.head:
            match = next((c for c in reversed(cands) if c.kind != "live"
                          and same_content(src.head, self.folder.head(c, len(src.head)))), None)
        if match is not None:
            try:
                # the file the head was read from, by its inode: its name may be another file's by now
                opened = self.folder.open_plain(match)
                if opened is None:
                    raise FileNotFoundError(match.path)
                raw, path = opened
                match = dataclasses.replace(match, path=path)
                src.open(match, src.pos, raw)
                self.log.info("file_opened", file=match.path, inode=match.inode, offset=src.pos,
                              compressed=match.compressed)
                return True
            except FileNotFoundError:
                pass
            except HEAD_ERRORS as exc:
                self._gap(src, src.unread(), f"unreadable: {exc}", exact=src.compressed is False)
                src.ended = True
                return False
        self._gap(src, src.unread(), "rotated away and deleted before it was read")
        src.ended = True
        return False

    def _last(self) -> Source | None:
        return self.sources[-1] if self.sources else None

    def _gap(self, src: Source, lost: int, reason: str, exact: bool = True, remember: bool = True,
             after: Source | None = None, even_empty: bool = False) -> None:
        """Each gap once: a file reported as lost is remembered (and checkpointed) by its fingerprint.
        ``even_empty``: a loss of unknown size (``lost`` is a lower bound, possibly 0) is still a gap."""
        fp = src.fingerprint()[0] if src.head else ""
        if lost < 0 or (lost == 0 and not even_empty) or (remember and fp in self.reported):
            return
        if remember and fp:
            self.reported[fp] = None
        self.gaps.append(Gap(src.path, src.inode, lost, reason, exact, fp, after or src))

    def _unreadable(self, path: str, inode: int, detail: str, lost: int, after: Source | None) -> None:
        self.log.error("file_unreadable", file=path, inode=inode, error=detail)
        self.gaps.append(Gap(path, inode, lost, f"unreadable: {detail}", False, after=after))

    # ---- start-up -----------------------------------------------------------------------------

    def start(self, checkpoint: Checkpoint | None, read_from_head: bool) -> None:
        cands = self.folder.scan()
        if cands is None:
            self._pending_start = (checkpoint, read_from_head)
            self._missing()
            return
        self._pending_start = None
        if checkpoint is not None:
            self.reported.update(dict.fromkeys(checkpoint.reported_gaps))
            self._resume(checkpoint, cands)
        elif read_from_head:
            for cand in cands:
                self._push(self._make(cand, 0, cands))
        else:
            for cand in cands:
                if cand.kind == "live":
                    self._push(self._make(cand, None, cands))
        self._balance()

    def _resume(self, cp: Checkpoint, cands: list[Candidate]) -> None:
        """The checkpointed file from its offset, then every file newer than it. Planned against one listing and
        opened as a truncation's plan is (``_open_all``): a rotation while we looked makes the plan again."""
        queue: list[Source | None] = []
        for attempt in range(TRIES):
            last = attempt == TRIES - 1
            index = self._find(cands, cp)
            again = self.folder.settled() if index is None and not last else None
            if again is not None and rotated_files(again) != rotated_files(cands):
                cands = again  # not found: it may be under a name not in that listing
                continue
            live = next((c for c in cands if c.kind == "live"), None)
            now = self.folder.head(live) if live is not None else None
            if index is not None and cands[index] is live and not _holds(now, cp):
                # found live, then copy-truncated before we looked again: its content is in a copy now
                if not last:
                    cands = self.folder.settled() or cands
                    continue
                index = None  # (then read by rotation order from the copies since: again rather than lost)
            plan, live_offset = self._resume_plan(cp, cands, index, now)
            if (opened := self._open_all(plan, cands, last, now, live_offset)) is not None:
                queue = opened
                break
            cands = self.folder.settled() or cands
        if index is not None:
            self.log.info("resumed", file=cands[index].path, offset=cp.offset, files=len(queue))
        elif cp.fingerprint_bytes and not cp.finished and cp.fingerprint not in self.reported:
            lost = max(cp.size - cp.offset, 0)
            if lost or cp.live:
                self.reported[cp.fingerprint] = None
                self.gaps.append(Gap(cp.path, cp.inode, lost, "the checkpointed file is gone"
                                     + (" (it was live: bytes_lost is a lower bound)" if cp.live else "")
                                     + "; files rotated after it and deleted while we were down are not counted",
                                     not cp.live, cp.fingerprint))
        else:
            self.log.info("checkpointed_file_gone", file=cp.path, note="reading the files rotated since")
        for src in queue:
            self._push(src)

    def _resume_plan(self, cp: Checkpoint, cands: list[Candidate], index: int | None,
                     now: bytes | None) -> tuple[list[tuple[Candidate, int]], int]:
        """(the files to read before the live one, with offsets; the live file's offset)"""

        def read_there(cand: Candidate) -> bool:  # a copy (being made) of what the live file holds: read there
            return cand.kind == "copy" and _related(now, self.folder.head(cand))

        if index is not None:
            found = cands[index]
            if found.kind == "live":
                return [], cp.offset
            return [(found, cp.offset)] + [(c, 0) for c in cands[index + 1 :]
                                           if c.kind == found.kind and not read_there(c)], 0
        # newer than the checkpointed file, by rotation order (names), never by modification time
        copies = [c for c in cands if c.kind == "copy"]
        fps = [_fp(self.folder.head(c)) for c in copies] if cp.after_copy else []
        first_copy = fps.index(cp.after_copy) + 1 if cp.after_copy in fps else 0
        return [(c, 0) for c in cands if (c.kind == "backup" and c.key > cp.after)
                or (c.kind == "copy" and copies.index(c) >= first_copy and not read_there(c))], 0

    def _find(self, cands: list[Candidate], cp: Checkpoint) -> int | None:
        if cp.fingerprint_bytes == 0:
            return None  # an empty file has no content to be recognised by: go by rotation order
        order = sorted(range(len(cands)), key=lambda i: (cands[i].kind != "live", -i))
        for i in order:
            if _holds(self.folder.head(cands[i], cp.fingerprint_bytes), cp):
                return i
        return None

    # ---- running ------------------------------------------------------------------------------

    def watch(self) -> None:
        if self._observer is not None or not self.folder.exists():
            return  # a missing folder is polled for and watched once it exists
        loop = asyncio.get_running_loop()
        self._observer = Observer()
        self._observer.schedule(_Waker(loop, self._wake, self.folder.stem), self.folder.path, recursive=False)
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
        is doing: a reader paused by a full window must still see rotations and truncations."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except TimeoutError:
                pass
            self._wake.clear()
            self.poll()
            if self._observer is None and not self.folder_missing:
                self.watch()
            after_poll()
            self.changed.set()

    def _missing(self) -> None:
        if not self.folder_missing:
            self.log.error("audit_log_folder_missing", folder=self.folder.path,
                           note="waiting for it to appear; /healthz answers 503 meanwhile")
        self.folder_missing = True

    def poll(self) -> None:
        """Reconcile with the folder: a new live file (rotation, recreate), or a truncated one."""
        if self._pending_start is not None:
            self.start(*self._pending_start)
            if self._pending_start is not None:
                return
        cands = self.folder.scan()
        if cands is None:
            self._missing()
            return
        if self.folder_missing:
            self.log.info("audit_log_folder_found", folder=self.folder.path)
            self.folder_missing = False
        live = next((c for c in cands if c.kind == "live"), None)
        if live is None:
            return
        tail = self.sources[-1] if self.sources and not self.sources[-1].ended else None
        if tail is None:
            self._push(self._make(live, 0, cands))
        elif tail.compressed or (live.device, live.inode) != tail.at:
            self.rotations += 1
            self.log.info("rotation_detected", file=self.path, old_inode=tail.at[1], new_inode=live.inode)
            tail.refresh()
            tail.live = False
            renamed = next((c for c in cands if not c.compressed and (c.device, c.inode) == tail.at), None)
            if renamed is not None:  # its backup name: what a gap of it is reported as
                tail.path = renamed.path
            for cand in self._missed(tail, cands):
                self._push(self._make(cand, 0, cands))
            self._push(self._make(live, 0, cands))
        elif self._still_same(tail, cands):
            self._newer_backups(tail, cands)
        self._balance()

    def _newer_backups(self, tail: Source, cands: list[Candidate]) -> None:
        """Backups newer than any there was when the live file we hold was listed, though it is still live:
        rotations between that listing and our open (a freed inode is soon the next live file's, so the one
        we opened looked like the one listed). Read now, before what follows in the live file."""
        newer = [c for c in cands if c.kind == "backup" and c.key > tail.after and not self._known(c)
                 and not _related(tail.head, self.folder.head(c))]  # (not a copy of what it holds: copytruncate)
        if not newer:
            return
        tail.after = max(c.key for c in newer)
        for cand in newer:
            self.log.warning("rotated_file_caught_up", file=cand.path, note="rotated between our listing and our open")
            if (src := self._make(cand, 0, cands)) is not None:
                src.late = self.late_queued = True
                self.sources.insert(len(self.sources) - 1, src)

    def _still_same(self, src: Source, cands: list[Candidate] | None, was_empty: bool | None = None) -> bool:
        """Does the live file still hold the content we are reading? If not, the truncation is handled here:
        seen by its size or head, or, for a file that was empty when we first looked (no head to compare),
        by logrotate copies made since that we have not read. ``was_empty``: it had no head before a read
        (which took its head from what it read)."""
        was_empty = not src.head if was_empty is None else was_empty
        if not src.refresh():
            self._truncated(src, cands if cands is not None else self.folder.scan() or [])
            return False
        if not (was_empty or src.unsettled):  # (empty still: it may have been written and truncated meanwhile)
            return True
        for attempt in range(TRIES):
            cands = self.folder.settled() or []  # not a listing torn by logrotate shifting its copies
            live = next((c for c in cands if c.kind == "live"), None)
            planned = self.folder.head(live) if live is not None else None
            missed = self._copies_since(src, cands, planned)
            if not missed:
                # (a copy of what it held before we opened it was made before that: this one look suffices)
                src.unsettled = False
                return True
            if (queue := self._open_all([(c, 0) for c in missed], cands, attempt == TRIES - 1, planned)) is not None:
                break
        self.truncations += len(missed)
        self.log.warning("truncations_caught_up", file=src.path, inode=src.inode, copies=[c.path for c in missed],
                         note="truncated while it looked empty to us, or before we could open it while logrotate "
                              "kept copying; reading the copies")
        src.ended, src.live = True, False
        for new in queue or ():
            self._push(new)
        return False

    def _open_all(self, plan: list[tuple[Candidate, int]], cands: list[Candidate],
                  last: bool, planned: bytes | None = None, live_offset: int = 0) -> list[Source | None] | None:
        """The planned files and then the live one, opened; None (all closed again) when a copy was made meanwhile
        or the live file no longer holds what it held when the plan was made: truncated again, its copy is in the
        next listing (a live file that was empty then cannot tell by its head).
        The ``last`` try is taken as it is: a copy it misses is found at the next truncation (``after_copy``).
        ``planned``: the live file's head the plan was made with (it left out the copies of what the live file
        held then): truncated or rewritten since, the plan is made again (that copy now holds the only one)."""
        live = next((c for c in cands if c.kind == "live"), None)
        now = self.folder.head(live) if live is not None else None
        moved_on = bool(planned) and not _related(planned, now)
        queue = [self._make(c, offset, cands) for c, offset in plan + ([(live, live_offset)] if live else [])]
        known = {(c.device, c.inode) for c in cands}
        new = [c for c in self.folder.settled() or () if c.kind != "live" and (c.device, c.inode) not in known]
        settled = not new and not moved_on and (not now or queue[-1] is None or _related(now, queue[-1].head))
        if last or live is None or settled:
            if last and not settled and live is not None and queue[-1] is not None:
                queue[-1].unsettled = True  # (_still_same looks for the copies made since at its next poll)
            if live is not None and (src := queue[-1]) is not None and now:  # what it held then may be in a copy by now: not older
                copies = [self.folder.head(c) for c in cands if c.kind == "copy"]  # oldest first
                if moved_on:  # the plan left out the copies of what it held then (read there), but it was
                    # truncated since: those hold the only one, so only the copies older than them were read
                    copies = copies[: next((i for i, h in enumerate(copies) if _related(planned, h)), len(copies))]
                src.after_copy = next((_fp(h) for h in reversed(copies) if h is not None and not _related(now, h)
                                       and not _related(src.head, h)), "")
            return queue
        for src in queue:
            if src is not None:
                src.close()
        return None

    def _copies_since(self, src: Source, cands: list[Candidate], now: bytes | None) -> list[Candidate]:
        """logrotate copies newer than the newest one there was when ``src`` became live, but the one of what the
        live file holds now (``now``, its head: read there): ``src`` looked empty, so it read none of them, also not
        one of the content its head was refreshed with (truncated again meanwhile)."""
        copies = [c for c in cands if c.kind == "copy"]
        fps = [_fp(self.folder.head(c)) for c in copies] if src.after_copy else []
        start = fps.index(src.after_copy) + 1 if src.after_copy in fps else 0  # a pruned one: all are newer
        out = []
        for cand in copies[start:]:
            head = self.folder.head(cand)  # None: renamed since the listing (read it: it is opened by inode)
            if not _related(head, now) and not self._known(cand, but=src):
                out.append(cand)
        return out

    def _known(self, cand: Candidate, but: Source | None = None) -> bool:
        """``cand`` is queued (``but``: the file being replaced, whose content is read from its copies)."""
        for src in self.sources:
            if src.ended or src is but:
                continue
            if not cand.compressed and (cand.device, cand.inode) == src.at and (
                    src.fh is not None or same_content(src.head, self.folder.head(cand, len(src.head)))):
                return True  # a file we do not hold may be gone, and its inode reused by a new one
            if cand.compressed and src.head and same_content(src.head, self.folder.head(cand, len(src.head))):
                return True
        return False

    def _missed(self, tail: Source, cands: list[Candidate]) -> list[Candidate]:
        """Backups rotated between two of our looks (live for a moment), oldest first."""
        backups = [c for c in cands if c.kind == "backup"]
        at = next((i for i, c in enumerate(backups) if (not c.compressed and (c.device, c.inode) == tail.at)
                   or (c.compressed and same_content(tail.head, self.folder.head(c, len(tail.head))))), None)
        # and those newer than any there was when it was listed: rotated between that listing and our open
        after = [c for i, c in enumerate(backups) if (at is not None and i > at) or c.key > tail.after]
        missed = [c for c in after if not self._known(c)]
        for cand in missed:
            self.log.warning("rotated_file_caught_up", file=cand.path, note="rotated before we saw it live")
        return missed

    def _truncated(self, tail: Source, cands: list[Candidate]) -> None:
        """Copy-truncate: what we had not read comes from the copy of our content, the copies of truncations
        made since that we never saw live follow (also when ours is gone: then what it held past our last look
        is a gap), then the live file from 0. The folder is listed again until no rotation tears the listing."""
        self.truncations += 1
        resume, seen = tail.splitter.offset, max(tail.size, tail.pos)
        tail.ended, tail.live = True, False
        for attempt in range(TRIES):
            cands = self.folder.settled() or cands
            live = next((c for c in cands if c.kind == "live"), None)
            now = self.folder.head(live) if live is not None else None
            pool = [c for c in cands if c.kind != "live" and not self._known(c)]
            heads = {c.path: self.folder.head(c) for c in pool}
            copy = next((c for c in reversed(pool) if same_content(tail.head, heads[c.path])), None)
            plan = [(c, resume if c is copy else 0) for c in self._since(tail, pool, heads, copy, cands)
                    if c is copy or not (_related(now, heads[c.path]) or _related(tail.head, heads[c.path]))]
            if (queue := self._open_all(plan, cands, attempt == TRIES - 1, now)) is not None:
                break
        self.log.warning("file_truncated", file=tail.path, inode=tail.inode, offset=resume,
                         copy=copy.path if copy else None, copies=len(plan))
        ours = next((q for (c, _), q in zip(plan, queue or (), strict=False) if c is copy), None)
        if copy is not None and ours is not None and (copy_size := self.folder.content_size(copy)) < seen:
            self._gap(tail, seen - copy_size, "written between the copy and the truncation", exact=False,
                      remember=False, after=ours)
        if copy is None:
            self._gap(tail, seen - resume, "truncated before it was read and no copy found"
                      + ("; copies were made since: its own was pruned" if plan else ""), exact=False,
                      even_empty=bool(plan))
        for src in queue or ():
            self._push(src)

    def _since(self, tail: Source, pool: list[Candidate], heads: dict[str, bytes | None],
               copy: Candidate | None, cands: list[Candidate]) -> list[Candidate]:
        """The copy of ``tail`` and those made after ``tail`` became live, oldest first (of ``pool``, the
        copies not queued)."""
        if copy is not None and copy.kind != "copy":  # an apiserver-style name: rotation order by name
            return [copy] + [c for c in pool[pool.index(copy) + 1 :] if c.kind == copy.kind]
        copies = [c for c in pool if c.kind == "copy"]
        # after the newest copy there was when it became live, looked for among all copies: that one may be
        # queued still (so not in the pool), and the older ones were read; none then, or it is pruned (so are
        # all older ones): all are newer
        every = [c for c in cands if c.kind == "copy"]
        fps = [_fp(heads[c.path] if c.path in heads else self.folder.head(c)) for c in every] \
            if tail.after_copy else []
        first = fps.index(tail.after_copy) + 1 if tail.after_copy in fps else 0
        if copy is not None:
            first = min(first, every.index(copy))
        return [c for c in copies if every.index(c) >= first]

    def read(self) -> Read | None:
        """The next lines from the oldest file; None when everything available has been read."""
        while self.sources:
            src = self.sources[0]
            if not src.ended and src.fh is None:
                self._reopen(src)
            if src.ended:
                return self._finish(src, complete=False)
            had_head = bool(src.head)
            try:
                data = src.read()
            except HEAD_ERRORS as exc:  # a damaged or cut gzip backup
                self._unreadable(src.path, src.inode, str(exc) or type(exc).__name__, src.unread(), src)
                src.ended = True
                continue
            if data:
                if src.live and not self._still_same(src, None, was_empty=not had_head):
                    self._balance()  # what we just read may be the new content: it is read again
                    continue
                src.pos += len(data)
                src.size = max(src.size, src.pos)
                lines, oversized = src.splitter.feed(data)
                return Read(src, lines, oversized, False)
            if len(self.sources) == 1:
                return None
            return self._finish(src, complete=True)
        return None

    def _finish(self, src: Source, complete: bool) -> Read:
        """A newer file exists, so this one is complete: its unterminated tail counts as a line."""
        last = src.splitter.finish() if complete else None
        self.sources.popleft()
        src.close()
        self._balance()
        self.log.info("file_finished", file=src.path, inode=src.inode, offset=src.pos)
        return Read(src, [last] if last and last.data.strip() else [], [], True)

    def resume_point(self, src: Source, offset: int) -> tuple[Source, int]:
        """Where a position acked at ``offset`` of ``src`` is to be saved: there, unless an older file found late
        is queued before ``src``; then at that file's first unread byte, so that a restart reads it (and what
        follows it, again) rather than resuming past it. ``late_queued`` says when to save it again."""
        for queued in self.sources:
            if queued is src:
                break
            if queued.late:
                return queued, queued.splitter.offset
        return src, offset

    def lag_bytes(self) -> int:
        """Bytes in the files of the queue that we have not read yet."""
        return sum(src.unread() for src in self.sources)
