"""An apiserver-like audit log writer: appends JSON lines and rotates the way the kube-apiserver's
log library does (rename to <name>-<timestamp><ext>, open a new file, keep --max-backups, optional
gzip of backups). Run as a real process:

    python -m tests.auditlog DIR --events N [--start 0] [--rotate-bytes 2000000] [--max-backups 5]
                             [--compress] [--rate EVENTS_PER_S] [--pad BYTES]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
import time
from datetime import UTC, datetime

import orjson


def event(seq: int, pad: int = 200) -> dict[str, object]:
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": f"id-{seq:09d}",
            "stage": "ResponseComplete", "verb": "get", "seq": seq,
            "objectRef": {"resource": "pods", "namespace": "default", "name": f"p-{seq % 100}"},
            "stageTimestamp": "2026-11-20T09:00:00.123456Z", "pad": "x" * pad}


class RotatingWriter:
    def __init__(self, folder: str, rotate_bytes: int, max_backups: int, compress: bool) -> None:
        self.path = os.path.join(folder, "audit.log")
        self.rotate_bytes, self.max_backups, self.compress = rotate_bytes, max_backups, compress
        self.fh = open(self.path, "ab")  # noqa: SIM115
        self.size = self.fh.tell()
        self.rotations = 0

    def write(self, line: bytes) -> None:
        if self.size + len(line) > self.rotate_bytes and self.size > 0:
            self.rotate()
        self.fh.write(line)
        self.fh.flush()
        self.size += len(line)

    def backup_name(self) -> str:
        stamp = datetime.now(UTC)
        while True:
            name = os.path.join(os.path.dirname(self.path),
                                "audit-" + stamp.strftime("%Y-%m-%dT%H-%M-%S.") + f"{stamp.microsecond // 1000:03d}.log")
            if not os.path.exists(name) and not os.path.exists(name + ".gz"):
                return name
            stamp = stamp.fromtimestamp(stamp.timestamp() + 0.001, UTC)

    def rotate(self) -> None:
        self.fh.close()
        backup = self.backup_name()
        os.rename(self.path, backup)
        self.fh = open(self.path, "ab")  # noqa: SIM115
        self.size = 0
        self.rotations += 1
        if self.compress:
            with open(backup, "rb") as src, gzip.open(backup + ".gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.remove(backup)
        folder = os.path.dirname(self.path)
        backups = sorted(n for n in os.listdir(folder) if n.startswith("audit-") and ".log" in n)
        for name in backups[: max(0, len(backups) - self.max_backups)]:
            os.remove(os.path.join(folder, name))

    def close(self) -> None:
        self.fh.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--rotate-bytes", type=int, default=2_000_000)
    p.add_argument("--max-backups", type=int, default=5)
    p.add_argument("--compress", action="store_true")
    p.add_argument("--rate", type=float, default=0.0, help="events per second; 0 = as fast as possible")
    p.add_argument("--pad", type=int, default=200)
    a = p.parse_args(argv)
    writer = RotatingWriter(a.folder, a.rotate_bytes, a.max_backups, a.compress)
    start = time.monotonic()
    for i in range(a.events):
        writer.write(orjson.dumps(event(a.start + i, a.pad), option=orjson.OPT_APPEND_NEWLINE))
        if a.rate and i % 100 == 99:
            ahead = (i + 1) / a.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)  # pacing the writer, not synchronising the test
    writer.close()
    sys.stdout.write(f"wrote {a.events} rotations {writer.rotations}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
