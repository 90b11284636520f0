"""The stdout sink: one line per parsed record, a chunk written at once, in process over a pipe."""

from __future__ import annotations

import os

import orjson

from kube_audit.model.audit import parse
from tailer.ingest.stdout import StdoutSink
from tailer.metrics import TailerMetrics

GOOD = {"auditID": "a", "stage": "ResponseComplete", "verb": "get", "user": {"username": "u"},
        "stageTimestamp": "2026-11-20T09:00:00.000000Z"}
SECRET = {**GOOD, "auditID": "s", "objectRef": {"resource": "secrets", "name": "db"},
          "requestObject": {"data": {"password": "hunter2"}}}
ODD = {**GOOD, "auditID": "o", "note": "\udcff"}  # a lone surrogate: rejected, printed through the slow path


async def _printed(items: list, redact: bool) -> tuple[list[bytes], float]:
    metrics = TailerMetrics()
    read, write = os.pipe()
    try:
        await StdoutSink(metrics, fd=write, redact=redact).write(items)
        os.close(write)
        with os.fdopen(read, "rb") as out:
            data = out.read()
    finally:
        try:
            os.close(write)
        except OSError:
            pass
    return data.split(b"\n"), metrics.registry.get_sample_value("tailer_records_unencodable_total") or 0.0


async def test_each_record_is_one_line_redacted_by_default_and_odd_ones_counted() -> None:
    items = [parse(GOOD), parse(SECRET), parse(ODD), parse([1])]
    lines, unencodable = await _printed(items, redact=True)
    assert lines[-1] == b"" and len(lines) == 5  # every line ends with a newline, nothing else
    assert orjson.loads(lines[0])["auditID"] == "a" and lines[3] == b"[1]"
    assert b"hunter2" not in b"".join(lines) and b"<redacted>" in lines[1]
    assert lines[0] == orjson.dumps(GOOD) and unencodable == 1


async def test_without_redaction_the_record_is_printed_as_received() -> None:
    lines, _ = await _printed([parse(SECRET), parse(GOOD)], redact=False)
    assert lines == [orjson.dumps(SECRET), orjson.dumps(GOOD), b""]


async def test_an_empty_chunk_prints_nothing() -> None:
    assert await _printed([], redact=True) == ([b""], 0.0)
