"""The audit log folder: which files belong to the log, in which order they were rotated, what they hold.

Two rotation schemes are understood:

- the kube-apiserver's (lumberjack): the live file is renamed to ``<stem>-<UTC timestamp><ext>`` and
  optionally gzipped to ``...<ext>.gz``; the oldest backups beyond ``--audit-log-maxbackup`` are deleted.
  The timestamp in the name is the rotation order (it sorts as text).
- logrotate's ``copytruncate``: the live file is copied to ``<name>.1`` (older copies shift to ``.2`` ...,
  optionally gzipped), or to ``<name>-<date>`` with ``dateext``, and then truncated in place (same inode).
  These copies are only ever read to recover what a truncation took before we had read it.

Order is always taken from names, never from modification times. A file is recognised by its content: the
first ``FINGERPRINT_BYTES`` bytes (decompressed for gzip), which start with a unique auditID in an audit log.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from dataclasses import dataclass
from typing import IO

FINGERPRINT_BYTES = 1024
# where a rename takes a file: the live one to its backup name (the apiserver), a copy to the next copy name
# (logrotate shifting them); a backup stays where it is until it is gzipped (another file) or removed
_MOVES_TO = {"live": ("backup",), "copy": ("copy",), "backup": ()}
FOLLOW_TRIES = 20  # looks for a file that logrotate keeps moving while we open it (each one untorn listing)
HEAD_ERRORS = (OSError, EOFError, zlib.error)


@dataclass(frozen=True)
class Candidate:
    path: str
    kind: str  # "live", "backup" (renamed by the apiserver) or "copy" (logrotate copytruncate)
    key: str  # rotation order among files of the same kind: larger is newer
    compressed: bool
    device: int
    inode: int
    size: int  # bytes on disk


class Folder:
    def __init__(self, live_path: str, exclude: tuple[str, ...] = ()) -> None:
        self.live = os.path.abspath(live_path)
        self.path = os.path.dirname(self.live)
        base = os.path.basename(self.live)
        stem, ext = os.path.splitext(base)
        self.stem = stem
        self._backup = re.compile(rf"^{re.escape(stem)}-(.+){re.escape(ext)}(\.gz)?$")
        self._numbered = re.compile(rf"^{re.escape(base)}\.(\d+)(\.gz)?$")
        self._dated = re.compile(rf"^{re.escape(base)}-(.+?)(\.gz)?$")
        self.exclude = {os.path.abspath(p) for p in exclude}
        self._gz_heads: dict[tuple[int, int, int, int], bytes] = {}

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def _classify(self, name: str) -> tuple[str, str] | None:
        if m := self._backup.match(name):
            return "backup", m.group(1)
        if m := self._numbered.match(name):
            return "copy", f"{10**9 - int(m.group(1)):010d}"  # .1 is the newest copy
        if m := self._dated.match(name):
            return "copy", m.group(1)
        return None

    def scan(self) -> list[Candidate] | None:
        """Every file of the log, oldest first: backups, then copies, then the live file. None: no folder."""
        # the live file first: every backup renamed before this live file was created is then in the listing
        # (a listing is not atomic: stat after listing could see a live file newer than the backups listed)
        try:
            live_st: os.stat_result | None = os.stat(self.live)
        except FileNotFoundError:
            live_st = None
        try:
            names = os.listdir(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        present = set(names)
        found: list[tuple[int, str, Candidate]] = []
        if live_st is not None:
            found.append((2, "", Candidate(self.live, "live", "", False, live_st.st_dev, live_st.st_ino,
                                           live_st.st_size)))
        for name in names:
            path = os.path.join(self.path, name)
            if path in self.exclude or path == self.live:
                continue
            if (c := self._classify(name)) is not None:
                kind, key = c
                # while a backup is being gzipped both exist: the plain one is complete, the .gz may not be yet
                if name.endswith(".gz") and name[:-3] in present:
                    continue
            else:
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            if live_st is not None and (st.st_dev, st.st_ino) == (live_st.st_dev, live_st.st_ino):
                continue  # rotated while we listed: still the live file for this look
            order = {"backup": 0, "copy": 1, "live": 2}[kind]
            cand = Candidate(path, kind, key, name.endswith(".gz"), st.st_dev, st.st_ino, st.st_size)
            found.append((order, key, cand))
        found.sort(key=lambda t: (t[0], t[1]))
        return [c for _, _, c in found]

    def settled(self, tries: int = 20) -> list[Candidate] | None:
        """A listing no rotation tore: two in a row hold the same files at the same names. logrotate shifts
        its copies by renames (``.1`` -> ``.2`` ...) while we list: a name listed before a rename is stat'ed
        after it, so one listing can miss a copy (the oldest one moved to a name not listed) or name one twice."""
        last = self.scan()
        for _ in range(tries):
            again = self.scan()
            if again is None or last is None or rotated_files(again) == rotated_files(last):
                return again
            last = again
        return last

    def open_plain(self, cand: Candidate) -> tuple[IO[bytes], str] | None:
        """Open exactly the file ``cand`` was (its inode), wherever a rename took it; None: gone."""
        return self._open_same(cand, follow=True)

    def _open_same(self, cand: Candidate, follow: bool) -> tuple[IO[bytes], str] | None:
        """The file ``cand`` was, open, and where it is now; ``follow``: looked for by inode under the other
        names when its own names another file now (a rename), else None then. Gone means no untorn listing
        holds its inode: logrotate may shift it again between a listing and our open (.3 -> .4 -> .5 while
        we are starved of CPU), and a file that only moved is not a gap."""
        paths: list[str] = [cand.path]
        for _ in range(FOLLOW_TRIES if follow else 1):
            for path in paths:
                try:
                    fh = open(path, "rb")  # noqa: SIM115 - the caller owns it
                except FileNotFoundError:
                    continue
                st = os.fstat(fh.fileno())
                if (st.st_dev, st.st_ino) == (cand.device, cand.inode):
                    return fh, path
                fh.close()
            if not follow:
                break
            # only where a rename can take it: a removed file's inode is soon another's (the next audit.log or
            # .gz after the apiserver gzipped a backup and removed it), and a backup is never renamed again
            kinds = _MOVES_TO[cand.kind]
            paths = [c.path for c in self.settled() or () if (c.device, c.inode) == (cand.device, cand.inode)
                     and c.kind in kinds and c.compressed == cand.compressed]
            if not paths:
                break
        return None

    def head(self, cand: Candidate, n: int = FINGERPRINT_BYTES) -> bytes | None:
        """The first ``n`` bytes of the content (decompressed); None when unreadable or gone. A copy or backup
        is read wherever a rename took it since the listing (logrotate shifts ``.1`` -> ``.2`` while we look:
        read by its old name, a copy of ours named another file, and ours went unrecognised: a gap reported
        for what was in fact read again from the start). The live file's is None once its path names another
        file (it was rotated away: what the live file holds now is another question)."""
        try:
            opened = self._open_same(cand, follow=cand.kind != "live")
            if opened is None:
                return None
            cache_key = (cand.device, cand.inode, cand.size, n)
            with opened[0] as raw:
                if not cand.compressed:
                    return raw.read(n)
                if cache_key in self._gz_heads:
                    return self._gz_heads[cache_key]
                if len(self._gz_heads) > 256:
                    self._gz_heads.clear()
                with gzip.open(raw, "rb") as fh:
                    self._gz_heads[cache_key] = fh.read(n)
            return self._gz_heads[cache_key]
        except HEAD_ERRORS:
            return None

    def names(self, cand: Candidate) -> bool:
        """Whether ``cand``'s path still names its file (no rename or removal since the listing)."""
        try:
            st = os.stat(cand.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (cand.device, cand.inode)

    def content_size(self, cand: Candidate) -> int:
        """Bytes of content: the file size, or the size a gzip trailer records (modulo 4 GiB); read, as
        ``head``, wherever a rename took the file since the listing (0: gone)."""
        if not cand.compressed:
            return cand.size
        try:
            opened = self._open_same(cand, follow=True)
            if opened is None:
                return 0
            with opened[0] as fh:
                fh.seek(-4, os.SEEK_END)
                return int(struct.unpack("<I", fh.read(4))[0])
        except (OSError, struct.error):
            return 0

    def newest_backup_key(self, cands: list[Candidate] | None) -> str:
        keys = [c.key for c in cands or () if c.kind == "backup"]
        return max(keys) if keys else ""


def rotated_files(cands: list[Candidate]) -> list[tuple[str, int, int]]:
    """The rotated files of a listing by name and identity: two listings that differ here saw a rotation."""
    return [(c.path, c.device, c.inode) for c in cands if c.kind != "live"]


def same_content(head: bytes, other: bytes | None) -> bool:
    """``other`` (a file's head now) shows the same content we knew as ``head``."""
    return bool(head) and other is not None and other.startswith(head)
