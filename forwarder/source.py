"""One followed file: what we know of it (identity, head, size, position) and, while it is held, its descriptor."""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass, field
from typing import IO, Any, cast

from .checkpoint import Checkpoint
from .files import FINGERPRINT_BYTES, HEAD_ERRORS, Candidate
from .lines import Line, Splitter

READ_BLOCK = 1024 * 1024


@dataclass(eq=False)
class Source:
    """A file to read. ``fh`` is None while it is not held open (``--max-held-files``); it is re-opened by
    its content later, also after the apiserver gzipped it. ``device``/``inode`` are those first seen."""

    path: str
    device: int
    inode: int
    compressed: bool
    splitter: Splitter
    pos: int  # bytes consumed from the content (the splitter may hold back a partial line)
    start: int  # where reading started
    after: str = ""  # see Checkpoint.after
    after_copy: str = ""  # see Checkpoint.after_copy
    live: bool = False  # the live file (may still grow or be truncated)
    head: bytes = b""  # the first bytes of the content (up to FINGERPRINT_BYTES) as last verified
    size: int = 0  # the largest content size seen; final once the file is rotated
    fh: IO[bytes] | None = None
    raw: IO[bytes] | None = None  # the file under a gzip reader (GzipFile does not close it)
    at: tuple[int, int] = (0, 0)  # device and inode of the file now held (a .gz after compression differs)
    ended: bool = False  # nothing more can be read from it: truncated under us, or gone
    # the live file as opened on the last try of a plan that copies kept tearing: logrotate may have copied
    # and truncated it again before we opened it, and only a copy newer than ``after_copy`` holds that
    unsettled: bool = False
    # queued behind the file being read though older than it (a rotation found late): until it is read, a
    # saved position must not pass it (Follower.resume_point)
    late: bool = False
    _fingerprint: tuple[str, int] | None = None

    def fingerprint(self) -> tuple[str, int]:
        if self._fingerprint is not None:
            return self._fingerprint
        fp = hashlib.sha256(self.head).hexdigest(), len(self.head)
        if len(self.head) == FINGERPRINT_BYTES or self.ended or not self.live:
            self._fingerprint = fp
        return fp

    def identifiable(self) -> bool:
        """Its head tells it apart after a restart: a full fingerprint, or the whole of a file that no longer
        grows (a backup or copy shorter than a fingerprint; an empty one has nothing to tell)."""
        n = self.fingerprint()[1]
        return n == FINGERPRINT_BYTES or (n > 0 and not self.live)

    def identity(self) -> str:
        fp, _ = self.fingerprint()
        return f"{self.device}:{self.inode}:{fp[:16]}"

    def checkpoint(self, offset: int) -> Checkpoint:
        fp, n = self.fingerprint()
        return Checkpoint(self.path, self.device, self.inode, fp, n, offset, self.compressed, self.size,
                          after=self.after, after_copy=self.after_copy, live=self.live)

    def unread(self) -> int:
        return 0 if self.ended else max(self.size - self.pos, 0) + self.splitter.pending()

    def refresh(self) -> bool:
        """Re-read the head and size of a held plain file. False: the head changed (truncated, rewritten)."""
        if self.fh is None or self.compressed:
            return True
        seen = head_and_size(self.fh.fileno())
        if seen is None:  # it shrank while we looked: truncated, unless we know nothing of it yet (no head:
            return not self.head  # then the copies made since say what it held, Follower._still_same)
        now, size = seen
        if (self.head and not now.startswith(self.head)) or size < self.size:
            return False
        if len(now) > len(self.head):
            self.head = now
        self.size = max(self.size, size)
        return True

    def adopt(self, raw: IO[bytes], path: str, offset: int) -> None:
        """Hold ``raw`` (a plain file opened by its inode) at ``offset``."""
        st = os.fstat(raw.fileno())
        raw.seek(offset)
        self.fh, self.raw, self.path, self.compressed, self.at = raw, None, path, False, (st.st_dev, st.st_ino)

    def open(self, cand: Candidate, offset: int, raw: IO[bytes] | None = None) -> None:
        """Read ``cand`` from ``offset``: ``raw`` when given (the file already open, found by its inode),
        else opened by its path."""
        if raw is None:
            raw = open(cand.path, "rb")  # noqa: SIM115 - held until read to its end or closed by the held-file bound
        try:
            st = os.fstat(raw.fileno())
            fh: IO[bytes] = raw
            if cand.compressed:
                fh = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
                _skip(fh, offset)
            else:
                fh.seek(offset)
        except HEAD_ERRORS:
            raw.close()
            raise
        self.fh, self.raw = fh, raw if cand.compressed else None
        self.path, self.compressed, self.at = cand.path, cand.compressed, (st.st_dev, st.st_ino)

    def close(self) -> None:
        """Give the descriptor back; reading resumes at the first byte not yet returned as a line."""
        if self.fh is None:
            return
        if not self.ended:
            self.refresh()
            self.pos = self.splitter.rewind()
        self.fh.close()
        if self.raw is not None:
            self.raw.close()
        self.fh = self.raw = None

    def read(self) -> bytes:
        assert self.fh is not None
        if self.raw is None and not self.compressed and max(self.pos, len(self.head)) < FINGERPRINT_BYTES:
            # the start of a file (its head short or empty): read from 0 in one call, so that the head we
            # check it by later is of the content we read. A head taken at another moment can be of other
            # content (copy-truncated in between: empty then, or already written anew), and a truncation
            # right after our read would go unseen
            whole = os.pread(self.fh.fileno(), self.pos + READ_BLOCK, 0)
            if whole.startswith(self.head):
                self.head = whole[:FINGERPRINT_BYTES]
            data = whole[self.pos :]
            self.fh.seek(self.pos + len(data))
            return data
        return self.fh.read(READ_BLOCK)


def head_and_size(fd: int) -> tuple[bytes, int] | None:
    """A plain file's head and a size of the content that head is of; None: it shrank while we looked
    (truncated). Read in one order alone, either can be of new content (truncated and written again between
    the two reads) that the other is not of: a size too large for the head we check, and a later look takes
    the file for truncated, or a gap counts bytes as lost that were never there."""
    size = os.fstat(fd).st_size
    head = os.pread(fd, FINGERPRINT_BYTES, 0)
    return None if os.fstat(fd).st_size < size else (head, size)


@dataclass(frozen=True)
class Read:
    source: Source
    lines: list[Line]
    oversized: list[Line]
    done: bool  # the source is finished (rotated away and read to its end, truncated, or gone)


@dataclass(frozen=True)
class Gap:
    path: str
    inode: int
    bytes_lost: int
    reason: str
    exact: bool = True  # False: bytes_lost is a lower bound
    fingerprint: str = ""
    # the queued file the loss follows in reading order (None: before whatever is read next): the reader
    # passing its end is where the lost events would have been read, which dates the gap
    after: Any = field(default=None, compare=False, repr=False)


def _skip(fh: IO[bytes], n: int) -> None:
    while n > 0:
        block = fh.read(min(n, READ_BLOCK))
        if not block:
            return
        n -= len(block)


def last_line_end(fh: IO[bytes]) -> int:
    """Where reading "from the end" starts: just after the last newline, never mid-line."""
    size = os.fstat(fh.fileno()).st_size
    back = min(size, 1024 * 1024)
    if back == 0:
        return 0
    tail = os.pread(fh.fileno(), back, size - back)
    nl = tail.rfind(b"\n")
    return size - back + nl + 1 if nl >= 0 else size - back
