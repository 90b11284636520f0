"""kube_audit.writer, the compose demo's audit log: apiserver-like events and the apiserver's rotation names."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from kube_audit import writer


def test_writes_events_and_rotates_like_the_apiserver(tmp_path: Path) -> None:
    assert writer.main([str(tmp_path), "--events", "400", "--rate", "0", "--rotate-bytes", "20Ki",
                        "--max-backups", "2", "--seed", "7"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    backups = [n for n in names if n != "audit.log"]
    assert "audit.log" in names and len(backups) == 2
    assert all(re.fullmatch(r"audit-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.log", n) for n in backups)
    lines = b"".join((tmp_path / n).read_bytes() for n in [*backups, "audit.log"]).splitlines()
    events = [orjson.loads(line) for line in lines]
    seqs = [int(e["annotations"]["demo.kube-audit-forwarder.io/seq"]) for e in events]
    assert seqs == list(range(400 - len(seqs), 400))  # oldest backups went away, the rest is in order
    assert all(len(line) < 20 * 1024 for line in lines)
    first = events[0]
    assert first["apiVersion"] == "audit.k8s.io/v1" and first["stage"] == "ResponseComplete"
    assert {"auditID", "verb", "user", "objectRef", "stageTimestamp", "responseStatus"} <= set(first)


def test_gzip_backups(tmp_path: Path) -> None:
    writer.main([str(tmp_path), "--events", "200", "--rate", "0", "--rotate-bytes", "10Ki", "--compress"])
    assert any(p.name.endswith(".log.gz") for p in tmp_path.iterdir())
