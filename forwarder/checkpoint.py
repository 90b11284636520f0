"""The durable position: which file (device, inode, head fingerprint) and the offset of the last acked line.

Written atomically (temp file, fsync, rename, fsync of the folder), only after an ack. Beside the position:
the acked end of the chunk chain (seq and MAC of the last acked chunk, events or status), the time of the
last acked event, and the gaps found but not yet acked in a status record (sent again after a restart).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

VERSION = 3
KNOWN_VERSIONS = (1, 2, 3)  # version 1 lacks the rotation order: a restart that cannot find its file reads all


@dataclass(frozen=True)
class Checkpoint:
    path: str  # where the file was when the position was taken (informational)
    device: int
    inode: int
    fingerprint: str  # sha256 hex of the file's first ``fingerprint_bytes`` bytes
    fingerprint_bytes: int
    offset: int  # just past the last acked line
    compressed: bool = False
    size: int = 0  # the file's size when the checkpoint was written: a lower bound of what a gap loses
    finished: bool = False  # the file had been rotated away and read to its end
    written_at: float = 0.0
    version: int = VERSION
    # every apiserver backup named after this timestamp is newer than the file (or is the file, renamed)
    after: str = ""
    # the fingerprint of the newest logrotate copy older than the file ("" when there was none)
    after_copy: str = ""
    live: bool = False  # the file was the live file: ``size`` is a lower bound, not its final size
    reported_gaps: tuple[str, ...] = ()  # fingerprints of files already reported as gaps: each gap once
    seq: int = 0  # the chain: the last acked chunk's seq (0: none yet) ...
    mac: str = ""  # ... and its MAC, hex
    last_event_time: str = ""  # RFC 3339 time of the last acked event ("" unknown): a gap found at start begins there
    gaps: tuple[dict[str, Any], ...] = ()  # GapReport records not yet acked in a status record


class CheckpointError(ValueError):
    """The position file exists but cannot be understood."""


def load(path: str) -> Checkpoint | None:
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read position file {path}: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("version") not in KNOWN_VERSIONS:
        version = raw.get("version") if isinstance(raw, dict) else None
        raise CheckpointError(f"position file {path} has unknown version {version!r}")
    try:
        raw["reported_gaps"] = tuple(raw.get("reported_gaps", ()))
        raw["gaps"] = tuple(g for g in raw.get("gaps", ()) if isinstance(g, dict))
        raw["version"] = VERSION
        return Checkpoint(**raw)
    except TypeError as exc:
        raise CheckpointError(f"position file {path} is malformed: {exc}") from exc


def save(path: str, checkpoint: Checkpoint) -> None:
    data = json.dumps({**asdict(checkpoint), "written_at": time.time()}).encode()
    folder = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
