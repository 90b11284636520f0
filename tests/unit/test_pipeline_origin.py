"""Who sent a chunk (issue 12): the pipeline names its source once, and routes status records apart."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgpack

import fluent_forward as ff
from kube_audit.model.source import OPTION, STATUS_TAG, SourceId
from tailer.ingest.pipeline import Origin, Pipeline
from tailer.metrics import TailerMetrics
from tests.integration.test_store import ev


class Keep:
    name = "keep"

    def __init__(self) -> None:
        self.calls: list[tuple[list[Any], Origin | None]] = []

    async def write(self, items: Sequence[Any], origin: Origin | None = None) -> None:
        self.calls.append((list(items), origin))


def wire(tag: str, records: list[dict], option: dict | None = None) -> ff.Records:
    payload = b"".join(ff.encode_entry(ff.EventTime(1_763_629_200, i), r) for i, r in enumerate(records))
    message = ff.encode_packed_forward(tag, payload, chunk="c1", size=len(records), compress=True)
    if option is not None:  # the option map goes beside size/chunk/compressed
        obj = msgpack.unpackb(message, raw=False)
        obj[2][OPTION] = option
        message = msgpack.packb(obj, use_bin_type=True)
    (batch,) = ff.Decoder().feed(message)
    assert isinstance(batch, ff.EventBatch)
    return batch.records("ping-host")


def run(pipeline: Pipeline, records: ff.Records) -> None:
    asyncio.run(pipeline.deliver(records))


def test_the_forwarders_option_names_the_source_and_the_payload_is_the_wire_bytes() -> None:
    sink = Keep()
    records = wire("audit", [ev(1), ev(2)], {"source": "apiserver-0", "cluster": "prod"})
    assert records.payload is not None and records.payload[:2] == b"\x1f\x8b"  # still gzip, as sent
    run(Pipeline([sink], TailerMetrics()), records)
    (items, origin), = sink.calls
    assert len(items) == 2 and origin is not None and origin.source == SourceId("prod", "apiserver-0")


def test_a_stock_peer_is_known_by_its_ping_hostname() -> None:
    sink = Keep()
    run(Pipeline([sink], TailerMetrics()), wire("audit", [ev(1)]))
    assert sink.calls[0][1] == Origin(SourceId("", "ping-host"), "audit")


def test_status_records_go_to_the_control_sink_alone() -> None:
    sink, control = Keep(), Keep()
    status = {"kind": "ForwarderStatus", "source": "apiserver-0"}
    run(Pipeline([sink], TailerMetrics(), control=control), wire(STATUS_TAG, [status], {"source": "apiserver-0"}))
    assert sink.calls == [] and control.calls[0][0] == [status]


def test_without_a_sources_stage_status_records_are_acked_as_rejected() -> None:
    sink, metrics = Keep(), TailerMetrics()
    run(Pipeline([sink], metrics), wire(STATUS_TAG, [{"kind": "ForwarderStatus"}]))
    assert sink.calls == []
    assert metrics.records_rejected.labels("status_unhandled")._value.get() == 1
