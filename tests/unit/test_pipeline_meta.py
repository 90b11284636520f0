"""What the pipeline keeps beside each audit event for the store: the forward tag and the entry's metadata."""

from __future__ import annotations

import orjson

import fluent_forward as ff
from kube_audit.model.audit import AuditEvent, Rejected, parse
from tailer.ingest.pipeline import DEFAULT_TAG, meta_of, with_meta
from tests.integration.test_store import ev


def batch(tag: str, records: list[dict], metadata: list[dict]) -> ff.Records:
    entries = [(ff.EventTime(1_763_629_200, i), r) for i, r in enumerate(records)]
    return ff.EventBatch(tag, entries, ff.Options(), "forward", 0, metadata).records()


def test_the_common_case_keeps_nothing_and_copies_nothing() -> None:
    records = batch(DEFAULT_TAG, [ev(1), ev(2)], [{}, {}])
    items = [parse(r) for r in records]
    assert with_meta(items, records) is items
    assert all(isinstance(i, AuditEvent) and i.meta is None for i in items)
    plain = [parse(ev(3))]
    assert with_meta(plain, [ev(3)]) is plain  # a list without .tag/.metadata (an in-process caller)


def test_metadata_and_a_non_default_tag_are_kept_per_entry() -> None:
    records = batch("relay.in", [ev(1), ev(2), {"not": "an audit event"}],
                    [{"k8s": {"ns": "prod"}, 7: b"\xff\x00"}, {}, {"origin": "x"}])
    items = with_meta([parse(r) for r in records], records)
    first, second, third = items
    assert isinstance(first, AuditEvent) and isinstance(second, AuditEvent) and isinstance(third, Rejected)
    assert first.record is records[0]  # the same record: the sink's refusals are matched by it
    assert first.meta is not None and orjson.loads(first.meta) == {"tag": "relay.in",
                                                                  "metadata": {"k8s": {"ns": "prod"}, "7": "/wA="}}
    assert second.meta is not None and orjson.loads(second.meta) == {"tag": "relay.in", "metadata": {}}


def test_meta_of() -> None:
    assert meta_of(DEFAULT_TAG, {}) is None and meta_of(None, None) is None
    assert orjson.loads(meta_of(DEFAULT_TAG, {"a": 1}) or b"") == {"tag": "audit", "metadata": {"a": 1}}
