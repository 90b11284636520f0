"""The rejected-records file: JSON lines, bounded, and never a reason to stall the stream."""

from __future__ import annotations

import json
from pathlib import Path

from kube_audit.model.audit import parse
from tailer.ingest.rejected import RejectedFile
from tailer.metrics import TailerMetrics


def errors(metrics: TailerMetrics, reason: str) -> float:
    return metrics.registry.get_sample_value("tailer_rejected_file_errors_total", {"reason": reason}) or 0.0


async def test_lines_bounds_and_failures(tmp_path: Path) -> None:
    metrics = TailerMetrics()
    bad = [parse({"auditID": "a", "stage": "ResponseComplete", "user": "bob"}), parse([1, 2])]
    out = RejectedFile(str(tmp_path / "sub" / "rejected.jsonl"), metrics, max_bytes=400)
    await out.write(bad)  # type: ignore[arg-type]
    lines = [json.loads(line) for line in (tmp_path / "sub" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["reason"], r["record"]) for r in lines] == [
        ("bad_shape", {"auditID": "a", "stage": "ResponseComplete", "user": "bob"}), ("not_a_map", [1, 2])]
    await out.write(bad * 5)  # type: ignore[arg-type]  # would pass max_bytes: left out, counted
    assert len((tmp_path / "sub" / "rejected.jsonl").read_text().splitlines()) == 2
    assert errors(metrics, "full") == 10
    (tmp_path / "dir").mkdir()
    broken = RejectedFile(str(tmp_path / "dir"), metrics)  # a directory: every write fails
    await broken.write(bad)  # type: ignore[arg-type]
    assert errors(metrics, "write_failed") == 2
