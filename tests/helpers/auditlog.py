"""Test events, written by a real process through kube_audit.writer's apiserver-like rotation (rename to
<name>-<timestamp><ext>, open a new file, keep --max-backups, optional gzip of backups), or with
--copytruncate as logrotate's copytruncate does it (shift <name>.1 -> <name>.2 ..., copy the live file to
<name>.1, optionally gzip it, truncate the live file in place; the writer keeps appending to its descriptor):

    python -m tests.helpers.auditlog DIR --events N [--start 0] [--rotate-bytes 2000000] [--max-backups 5]
                             [--compress] [--copytruncate] [--rate EVENTS_PER_S] [--pad BYTES]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
import time

import orjson

from kube_audit.writer import RotatingLog  # the apiserver-like rotation, shared with the demos


def event(seq: int, pad: int = 200) -> dict[str, object]:
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": f"id-{seq:09d}",
            "stage": "ResponseComplete", "verb": "get", "seq": seq,
            "objectRef": {"resource": "pods", "namespace": "default", "name": f"p-{seq % 100}"},
            "stageTimestamp": "2026-11-20T09:00:00.123456Z", "pad": "x" * pad}


class CopyTruncateLog(RotatingLog):
    """``audit.log`` rotated by logrotate's ``copytruncate`` (``rotate max_backups``, ``compress`` without
    ``delaycompress`` when ``compress``): the copies are ``audit.log.1`` (newest) ... ``audit.log.N``. The
    writer keeps its descriptor across truncations, as the apiserver does."""

    def _name(self, n: int) -> str:
        return f"{self.path}.{n}" + (".gz" if self.compress else "")

    def rotate(self) -> None:
        if os.path.exists(self._name(self.max_backups)):
            os.remove(self._name(self.max_backups))
        for n in range(self.max_backups - 1, 0, -1):
            if os.path.exists(self._name(n)):
                os.rename(self._name(n), self._name(n + 1))
        if self.compress:
            with open(self.path, "rb") as src, gzip.open(self._name(1) + ".tmp", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.rename(self._name(1) + ".tmp", self._name(1))
        else:
            shutil.copyfile(self.path, self._name(1))
        os.truncate(self.path, 0)
        self.size = 0
        self.rotations += 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--rotate-bytes", type=int, default=2_000_000)
    p.add_argument("--max-backups", type=int, default=5)
    p.add_argument("--compress", action="store_true")
    p.add_argument("--copytruncate", action="store_true", help="rotate as logrotate's copytruncate does")
    p.add_argument("--rate", type=float, default=0.0, help="events per second; 0 = as fast as possible")
    p.add_argument("--pad", type=int, default=200)
    a = p.parse_args(argv)
    kind = CopyTruncateLog if a.copytruncate else RotatingLog
    writer = kind(a.folder, a.rotate_bytes, a.max_backups, a.compress)
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
