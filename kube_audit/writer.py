"""An apiserver-like audit log for demos (docker-compose.yml): JSON lines, rotated like the kube-apiserver.

    python -m kube_audit.writer /var/log/audit [--events 0] [--rate 20] [--rotate-bytes 1Mi] [--max-backups 3]

Writes ``audit.log`` in the folder; when the next line would pass --rotate-bytes, renames it to
``audit-<UTC time, ms>.log`` (optionally gzipped) as the apiserver does with --audit-log-maxsize, and keeps
--max-backups of those (--audit-log-maxbackup). The events look like the apiserver's at stage
ResponseComplete: users creating, patching and deleting a few custom resources and ConfigMaps.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import shutil
import signal
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from kube_audit.runtime.flags import parse_size

USERS = [("alice@example.com", ["dba"]), ("bob@example.com", ["dev"]), ("system:admin", ["system:masters"])]
OBJECTS = [("example.com", "v1", "databases", "Database", "shop", "orders"),
           ("example.com", "v1", "databases", "Database", "shop", "payments"),
           ("", "v1", "configmaps", "ConfigMap", "default", "settings")]
VERBS = ["create", "patch", "update", "patch", "delete"]
CODES = {"create": 201, "patch": 200, "update": 200, "delete": 200}


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_event(user: str, groups: list[str], verb: str, obj: tuple[str, str, str, str, str, str],
               spec: dict[str, Any] | None = None, state: dict[str, Any] | None = None, code: int | None = None,
               audit_id: str | None = None, received: datetime | None = None) -> dict[str, Any]:
    """One ResponseComplete event as the apiserver logs it at level RequestResponse.

    ``obj`` is (group, version, resource, kind, namespace, name); ``spec`` the request's spec (of a create or
    update; for a patch the merge patch of the spec), ``state`` the object's spec after it (default ``spec``),
    logged as the response object. ``requestReceivedTimestamp`` is ``received`` (default: now), and
    ``stageTimestamp`` a few milliseconds later, as the apiserver's response takes.
    """
    group, version, resource, kind, namespace, name = obj
    received = received or datetime.now(UTC)
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    uri = f"{prefix}/namespaces/{namespace}/{resource}" + ("" if verb == "create" else f"/{name}")
    ref = {"resource": resource, "namespace": namespace, "name": name, "apiVersion": version}
    if group:
        ref["apiGroup"] = group
    event: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
        "auditID": audit_id or str(uuid.uuid4()), "stage": "ResponseComplete",
        "requestURI": uri, "verb": verb, "user": {"username": user, "groups": [*groups, "system:authenticated"]},
        "sourceIPs": ["10.0.0.7"], "userAgent": "kubectl/v1.31.0", "objectRef": ref,
        "responseStatus": {"metadata": {}, "code": code or CODES.get(verb, 200)},
        "requestReceivedTimestamp": _stamp(received),
        "stageTimestamp": _stamp(received + timedelta(milliseconds=3 + len(uri) % 7)),
    }
    if spec is not None and verb in ("create", "update", "patch"):
        def body(s: dict[str, Any]) -> dict[str, Any]:
            return {"kind": kind, "apiVersion": f"{group}/{version}" if group else version,
                    "metadata": {"name": name, "namespace": namespace}, "spec": s}

        event["requestObject"] = {"spec": spec} if verb == "patch" else body(spec)
        event["responseObject"] = body(spec if state is None else state)
    return event


def audit_event(rng: random.Random, seq: int) -> dict[str, Any]:
    """One random ResponseComplete event; ``seq`` rides along in an annotation so a reader can check for gaps."""
    user, groups = rng.choice(USERS)
    obj = rng.choice(OBJECTS)
    verb = rng.choice(VERBS)
    spec = {"replicas": rng.randint(1, 5), "version": rng.choice(["15", "16"])}
    event = make_event(user, groups, verb, obj, spec, audit_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)))
    event["annotations"] = {"demo.kube-audit-forwarder.io/seq": str(seq)}
    return event


class RotatingLog:
    """``audit.log`` in a folder, renamed to a timestamped backup when full, the oldest backups removed."""

    def __init__(self, folder: str, rotate_bytes: int, max_backups: int, compress: bool) -> None:
        self.folder = folder
        self.path = os.path.join(folder, "audit.log")
        self.rotate_bytes, self.max_backups, self.compress = rotate_bytes, max_backups, compress
        self.fh = open(self.path, "ab")  # noqa: SIM115 - kept open across writes, closed on rotation
        self.size = self.fh.tell()
        self.last_backup_ms = 0
        self.rotations = 0

    def write(self, line: bytes) -> None:
        if self.size and self.size + len(line) > self.rotate_bytes:
            self.rotate()
        self.fh.write(line)
        self.fh.flush()
        self.size += len(line)

    def _backup_name(self) -> str:
        # names sort in rotation order: at least a millisecond (their resolution) after the previous one
        ms = max(time.time_ns() // 1_000_000, self.last_backup_ms + 1)
        self.last_backup_ms = ms
        when = datetime.fromtimestamp(ms / 1000, UTC)
        return os.path.join(self.folder, f"audit-{when:%Y-%m-%dT%H-%M-%S}.{ms % 1000:03d}.log")

    def rotate(self) -> None:
        self.fh.close()
        backup = self._backup_name()
        os.rename(self.path, backup)
        self.fh = open(self.path, "ab")  # noqa: SIM115
        self.size = 0
        self.rotations += 1
        if self.compress:
            with open(backup, "rb") as src, gzip.open(backup + ".gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.remove(backup)
        backups = sorted(n for n in os.listdir(self.folder) if n.startswith("audit-") and ".log" in n)
        for name in backups[: max(0, len(backups) - self.max_backups)]:
            os.remove(os.path.join(self.folder, name))

    def close(self) -> None:
        self.fh.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kube_audit.writer", description=__doc__.splitlines()[0])
    p.add_argument("folder", help="where audit.log and its backups go")
    p.add_argument("--events", type=int, default=0, help="events to write, then exit (default 0: until SIGTERM)")
    p.add_argument("--rate", type=float, default=20.0, help="events per second (default 20; 0: as fast as possible)")
    p.add_argument("--rotate-bytes", type=parse_size, default=1024 * 1024, help="rotate past this size (default 1Mi)")
    p.add_argument("--max-backups", type=int, default=3, help="rotated files kept (default 3)")
    p.add_argument("--compress", action="store_true", help="gzip rotated files")
    p.add_argument("--seed", type=int, default=None, help="random seed, for repeatable logs")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    os.makedirs(a.folder, exist_ok=True)
    log = RotatingLog(a.folder, a.rotate_bytes, a.max_backups, a.compress)
    rng = random.Random(a.seed)
    start, seq = time.monotonic(), 0
    try:
        while not stopping and (a.events == 0 or seq < a.events):
            log.write(orjson.dumps(audit_event(rng, seq), option=orjson.OPT_APPEND_NEWLINE))
            seq += 1
            if a.rate:
                ahead = seq / a.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)  # pacing the writer to --rate
    finally:
        log.close()
    sys.stderr.write(f"kube_audit.writer: wrote {seq} events to {log.path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
