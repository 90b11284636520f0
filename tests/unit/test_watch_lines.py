"""A watch line made from an event's stored JSON without parsing it is the line made from the parsed event."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from bench.events import many
from kube_audit.model.audit import AuditEvent, parse
from kube_audit.model.source import SourceId
from tailer.api import resource

SOURCES = [None, SourceId("eu-1", "apiserver-0")]
INCLUDES = ["None", "Metadata", "Object"]


def stored(record: dict[str, Any]) -> bytes:
    """What the store keeps of a record: the JSON ingest made of it (redacted)."""
    event = parse(record)
    assert isinstance(event, AuditEvent)
    return event.json


def parsed_item(seq: int, data: bytes, source: SourceId | None) -> bytes:
    return resource.dump(resource.item(seq, resource.loads(data), source=source))


def parsed_table(seq: int, data: bytes, include: str, source: SourceId | None) -> bytes:
    return resource.dump(resource.table("v1", [resource.row(seq, resource.loads(data), include, source)], {}))


def test_realistic_events_are_spliced_byte_for_byte() -> None:
    events = [stored(r) for r in many(400)]
    assert all(resource._light(data) is not None for data in events)  # the path taken for apiserver events
    for seq, data in enumerate(events, 1):
        for source in SOURCES:
            assert resource.item_json(seq, data, source) == parsed_item(seq, data, source)
            for include in INCLUDES:
                assert resource.table_json("v1", seq, data, include, source) == parsed_table(seq, data, include, source)


def _event(**extra: Any) -> dict[str, Any]:
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": "a-1",
            "stage": "ResponseComplete", "verb": "get", "user": {"username": "alice"},
            "objectRef": {"resource": "pods", "namespace": "shop", "name": "web"},
            "responseStatus": {"code": 200}, "stageTimestamp": "2026-11-20T09:00:00.000001Z", **extra}


ODD = {
    "its own metadata (v1beta1)": {**_event(apiVersion="audit.k8s.io/v1beta1"),
                                   "metadata": {"creationTimestamp": "2026-11-20T09:00:00Z"}},
    "its own metadata (v1)": _event(metadata={"name": "x", "labels": {"a": "b"}}),
    "null metadata": _event(metadata=None),
    "kind and apiVersion later": {k: v for k, v in reversed(list(_event().items()))},
    "no kind": {k: v for k, v in _event().items() if k != "kind"},
    "non-ASCII and escapes": _event(requestURI='/api/v1/namespaces/shop/pods?x="ü\\\n"', userAgent="kübectl\t/ü"),
    "odd field types": _event(auditID=12, stageTimestamp=None, user=["alice"], objectRef="pods",
                              responseStatus={"code": "200"}),
    "nothing but the head": {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": "a-2"},
}


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_events_give_the_parsed_line(name: str) -> None:
    data = orjson.dumps(ODD[name])  # as the store keeps JSON: compact, orjson's
    for source in SOURCES:
        assert resource.item_json(7, data, source) == parsed_item(7, data, source)
        for include in INCLUDES:
            assert resource.table_json("v1", 7, data, include, source) == parsed_table(7, data, include, source)


def test_metadata_of_its_own_is_replaced_not_repeated() -> None:
    data = orjson.dumps(ODD["its own metadata (v1)"])
    assert resource._light(data) is None
    line = resource.item_json(3, data, None)
    assert line.count(b'"metadata"') == 1 and orjson.loads(line)["metadata"]["resourceVersion"] == "3"


@pytest.mark.parametrize("depth", [10, 300])
def test_the_standard_library_json_of_the_slow_paths_means_the_same(depth: int) -> None:
    """Events stored through the model's fallback (``json.dumps``: ASCII escapes; nesting deeper than orjson
    takes, from before ingest bounded depth): the same item, whichever path made it."""
    deep: Any = "leaf"
    for _ in range(depth):
        deep = {"d": deep}
    event = _event(requestObject=deep, userAgent="kübectl")
    data = json.dumps(event, separators=(",", ":")).encode()
    line = json.loads(resource.item_json(9, data, SOURCES[1]))
    assert line == json.loads(parsed_item(9, data, SOURCES[1]))
    assert line["metadata"] == resource.item(9, event, source=SOURCES[1])["metadata"]
    assert (line["kind"], line["apiVersion"], line["userAgent"]) == ("AuditEvent", resource.API_VERSION, "kübectl")
    assert list(line) == [*event, "metadata"]  # kind and apiVersion in place, metadata last


def test_a_lone_surrogate_takes_the_parsed_path() -> None:
    data = json.dumps(_event(annotations={"note": "\ud800 lone"}), separators=(",", ":")).encode()
    assert resource._light(data) is None  # msgspec refuses it; the parsed path says what it always said
    assert resource.item_json(9, data, None) == parsed_item(9, data, None)


def test_a_list_page_from_stored_json_is_the_page_from_parsed_events() -> None:
    from tailer.store.rows import event_time

    odd = [orjson.dumps(e) for e in ODD.values()]
    rows = [(seq, data, SOURCES[seq % 2]) for seq, data in enumerate([stored(r) for r in many(100)] + odd, 1)]
    parsed = [(seq, resource.loads(data), source) for seq, data, source in rows]
    fluent = {3: {"tag": "audit", "host": "cp-1"}, len(rows): {"tag": "x"}}
    items, times = resource.list_items(rows, fluent)
    old_items, old_times = resource.list_items(parsed, fluent)
    assert items == old_items == [resource.dump(resource.item(s, e, fluent.get(s), src)) for s, e, src in parsed]
    assert [event_time(t) for t in times] == [event_time(t) for t in old_times] == [event_time(e) for _, e, _ in parsed]
    for include in INCLUDES:
        cells, times = resource.table_rows(rows, include)
        assert resource.table_body("v1", cells, {"resourceVersion": "9"}) == resource.table_body(
            "v1", [resource.row(s, e, include, src) for s, e, src in parsed], {"resourceVersion": "9"})
        assert [event_time(t) for t in times] == [event_time(e) for _, e, _ in parsed]
