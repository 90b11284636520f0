"""Test events, written by a real process through kube_audit.writer's apiserver-like rotation (rename to
<name>-<timestamp><ext>, open a new file, keep --max-backups, optional gzip of backups):

    python -m tests.helpers.auditlog DIR --events N [--start 0] [--rotate-bytes 2000000] [--max-backups 5]
                             [--compress] [--rate EVENTS_PER_S] [--pad BYTES]
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from kube_audit.writer import RotatingLog  # the apiserver-like rotation, shared with the demos


def event(seq: int, pad: int = 200) -> dict[str, object]:
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": f"id-{seq:09d}",
            "stage": "ResponseComplete", "verb": "get", "seq": seq,
            "objectRef": {"resource": "pods", "namespace": "default", "name": f"p-{seq % 100}"},
            "stageTimestamp": "2026-11-20T09:00:00.123456Z", "pad": "x" * pad}


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
    writer = RotatingLog(a.folder, a.rotate_bytes, a.max_backups, a.compress)
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
