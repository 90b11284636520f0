from __future__ import annotations

import json
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluent_forward import EventTime
from kube_audit.model.audit import (
    REJECT_REASONS,
    AuditEvent,
    ObjectKey,
    Rejected,
    dedup_key,
    dumps,
    parse,
    redact,
    view,
)
from tests.conftest import sample_events


def test_view_of_a_namespaced_custom_resource() -> None:
    ev = next(e for e in sample_events() if e["objectRef"].get("resource") == "databases")
    v = view(ev)
    assert v.object == ObjectKey("example.com", "databases", "shop", "orders")
    assert v.verb == "patch" and v.user == "bob@example.com" and v.groups == ("system:authenticated", "dba")
    assert dedup_key(ev) == (ev["auditID"], "ResponseComplete")


def test_cluster_scoped_and_nameless_objects() -> None:
    assert view({"objectRef": {"resource": "nodes", "name": "n1"}}).object == ObjectKey("", "nodes", "", "n1")
    assert view({"objectRef": {"resource": "pods", "namespace": "x"}}).object is None
    assert view({}).object is None


def test_secret_values_are_redacted_keys_kept_and_input_untouched() -> None:
    ev = {"objectRef": {"resource": "secrets", "name": "s"}, "requestObject": {"kind": "Secret",
          "data": {"password": "c2VjcmV0"}, "stringData": {"token": "t"}},
          "responseObject": {"kind": "SecretList", "items": [{"data": {"a": "b"}}]}}
    out = redact(ev)
    assert out["requestObject"]["data"] == {"password": "<redacted>"}
    assert out["requestObject"]["stringData"] == {"token": "<redacted>"}
    assert out["responseObject"]["items"][0]["data"] == {"a": "<redacted>"}
    assert ev["requestObject"]["data"] == {"password": "c2VjcmV0"}
    cm = {"objectRef": {"resource": "configmaps", "name": "c"}, "requestObject": {"data": {"k": "v"}}}
    assert redact(cm) is cm


def test_secret_values_are_redacted_in_patches_lists_tables_and_last_applied() -> None:
    """Regression: JSON patch values, ``kind: List`` items, Table rows and kubectl's last-applied
    annotation carried Secret values into the store, the API and ConfigMaps."""
    applied = '{"apiVersion":"v1","data":{"password":"c2VjcmV0"},"kind":"Secret"}'
    secret = {"kind": "Secret", "data": {"password": "c2VjcmV0"},
              "metadata": {"name": "s", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied,
                                                        "team": "a"}}}
    ref = {"resource": "secrets", "namespace": "x", "name": "s"}

    def out(field: str, body: object) -> str:
        return repr(redact({"objectRef": ref, field: body})[field])

    json_patch = [{"op": "replace", "path": "/data/password", "value": "c2VjcmV0"},
                  {"op": "add", "path": "/stringData", "value": {"token": "c2VjcmV0"}},
                  {"op": "test", "path": "/data", "value": {"password": "c2VjcmV0"}},
                  {"op": "add", "path": "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration",
                   "value": applied},
                  {"op": "add", "path": "/metadata/annotations", "value": {**secret["metadata"]["annotations"]}},
                  {"op": "add", "path": "/metadata", "value": {"annotations": {**secret["metadata"]["annotations"]}}},
                  {"op": "replace", "path": "", "value": {"kind": "Secret", "data": {"password": "c2VjcmV0"}}},
                  {"op": "add", "path": "/metadata/labels/team", "value": "a"}]
    bodies = {
        "json patch": json_patch,
        "merge patch": {"data": {"password": "c2VjcmV0"}, "metadata": {"annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": applied}}},
        "kind List": {"kind": "List", "items": [secret]},
        "Table": {"kind": "Table", "rows": [{"cells": ["s", "Opaque", 1], "object": secret}]},
        "apply": secret,
    }
    for what, body in bodies.items():
        for field in ("requestObject", "responseObject"):
            assert "c2VjcmV0" not in out(field, body), what
    patched = redact({"objectRef": ref, "requestObject": json_patch})["requestObject"]
    assert patched[0] == {"op": "replace", "path": "/data/password", "value": "<redacted>"}
    assert patched[1]["value"] == {"token": "<redacted>"}
    assert patched[-1] == json_patch[-1]  # a label is no secret
    assert json_patch[0]["value"] == "c2VjcmV0"  # the input is untouched


def test_credentials_are_redacted_everywhere() -> None:
    """Regression: TokenReview spec.token and TokenRequest status.token were stored and printed."""
    review = {"objectRef": {"resource": "tokenreviews", "apiGroup": "authentication.k8s.io"},
              "requestObject": {"kind": "TokenReview", "spec": {"token": "t0k", "audiences": ["a"]}},
              "responseObject": {"kind": "TokenReview", "spec": {"token": "t0k"}, "status": {"authenticated": True}}}
    out = redact(review)
    assert out["requestObject"]["spec"] == {"token": "<redacted>", "audiences": ["a"]}
    assert out["responseObject"]["spec"]["token"] == "<redacted>" and review["requestObject"]["spec"]["token"] == "t0k"
    request = {"objectRef": {"resource": "serviceaccounts", "subresource": "token", "name": "app"},
               "responseObject": {"kind": "TokenRequest", "status": {"token": "t0k", "expirationTimestamp": "x"}}}
    assert redact(request)["responseObject"]["status"] == {"token": "<redacted>", "expirationTimestamp": "x"}
    sa = {"objectRef": {"resource": "serviceaccounts", "name": "app"}, "responseObject": {"status": {"token": "x"}}}
    assert redact(sa) is sa  # only the token subresource carries one


GOOD = {"auditID": "a", "stage": "ResponseComplete", "verb": "get", "user": {"username": "u", "groups": ["g"]},
        "objectRef": {"resource": "pods", "namespace": "n", "name": "x"}, "responseStatus": {"code": 200},
        "stageTimestamp": "2026-11-20T09:00:00Z"}


def _deep(levels: int) -> dict:
    out: dict = {}
    for _ in range(levels - 1):
        out = {"a": out}
    return out


@pytest.mark.parametrize(("record", "reason"), [
    ({**GOOD, "user": "bob"}, "bad_shape"),
    ({**GOOD, "objectRef": "x"}, "bad_shape"),
    ({**GOOD, "responseStatus": 5}, "bad_shape"),
    ({**GOOD, "user": {"username": "u", "groups": 5}}, "bad_shape"),
    ({**GOOD, "verb": 5}, "bad_shape"),
    ({**GOOD, "responseStatus": {"code": 2**63}}, "bad_code"),
    ({**GOOD, "responseStatus": {"code": True}}, "bad_code"),
    ({**GOOD, "responseStatus": {"code": -1}}, "bad_code"),
    ({**GOOD, "objectRef": {"resource": "pods", "name": "a\x00"}}, "nul_in_field"),
    ({**GOOD, "stageTimestamp": float("nan")}, "non_finite_number"),
    ({**GOOD, "requestObject": {"x": [float("-inf")]}}, "non_finite_number"),
    ({**GOOD, 1: "a"}, "non_string_key"),
    ({**GOOD, "requestObject": {b"k": 1}}, "non_string_key"),
    ({**GOOD, "requestObject": {(1, 2): 1}}, "non_string_key"),
    ({**GOOD, "verb": "g\udcff"}, "invalid_unicode"),
    ({**GOOD, "requestObject": {"k\ud800": 1}}, "invalid_unicode"),
    ({**GOOD, "requestObject": _deep(100)}, "too_deep"),
    ({**GOOD, "requestObject": _deep(5000)}, "too_deep"),
    ({**GOOD, "user": {"username": "é" * 600}}, "field_too_long"),
    ([GOOD], "not_a_map"),
    ({"stage": "ResponseComplete"}, "not_an_audit_event"),
])
def test_records_of_an_unexpected_shape_are_rejected_with_a_reason(record, reason) -> None:
    out = parse(record)
    assert isinstance(out, Rejected) and out.reason == reason and out.reason in REJECT_REASONS, out
    assert out.json  # it can always be printed and kept raw
    json.loads(out.json)


def test_a_good_record_is_parsed_once_into_the_typed_view() -> None:
    ev = parse({**GOOD, "requestObject": _deep(98)})
    assert isinstance(ev, AuditEvent) and ev.key == ("a", "ResponseComplete") and ev.view.code == 200
    assert (ev.view.namespace, ev.view.resource, ev.view.name) == ("n", "pods", "x")
    assert ev.ts == 1_795_165_200.0 and not ev.redacted and json.loads(ev.json)["auditID"] == "a"
    secret = parse({**GOOD, "objectRef": {"resource": "secrets", "name": "s"}, "requestObject": {"data": {"k": "v"}}})
    assert isinstance(secret, AuditEvent) and secret.redacted and b'"v"' not in secret.json


def test_dumps_never_raises() -> None:
    for value in ({b"k": {(1, 2): "x"}}, {"a": "\udcff", 1: float("nan")}, _deep(3000), [b"\xff", 2**70]):
        data, _ = dumps(value)
        json.loads(data)


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(),
                     st.binary(max_size=8))
_KEYS = st.one_of(st.text(max_size=8), st.integers(), st.binary(max_size=4), st.sampled_from(
    ["auditID", "stage", "user", "objectRef", "responseStatus", "code", "groups", "username", "name"]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
                       max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=8), st.booleans())
def test_parse_never_raises_and_what_it_accepts_can_be_stored(record: dict, audit: bool) -> None:
    if audit:
        record = {**record, "auditID": "a", "stage": "ResponseComplete"}
    out = parse(record)
    if isinstance(out, AuditEvent):  # what the store indexes is text of bounded size, the body valid JSON
        v = out.view
        for text in (v.audit_id, v.stage, v.verb, v.user, v.group, v.resource, v.namespace, v.name):
            assert "\x00" not in text and len(text.encode("utf-8")) <= 1024
        assert v.code is None or 0 <= v.code < 2**31
        orjson.loads(out.json)  # how the store reads it back: strict (no NaN, valid UTF-8)
    else:
        assert out.reason in REJECT_REASONS
        json.loads(out.json)


def test_the_model_is_pure() -> None:
    """kube_audit/model and kube_audit/contract import no owner of an outside system (issue 10)."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys\nimport kube_audit.contract, kube_audit.model.audit, kube_audit.model.provenance, "
            "kube_audit.model.entry\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    mods = set(subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                              capture_output=True, text=True, timeout=60, check=True).stdout.split())
    owners = {"kubernetes", "aiohttp", "httpx", "psycopg", "sqlite3", "watchdog", "prometheus_client", "structlog",
              "tenacity", "socket", "asyncio", "tailer", "forwarder", "kubectl_audit", "fluent_forward"}
    assert not mods & owners, mods & owners


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=8), st.sampled_from(["user", "objectRef", "responseStatus", None]),
       st.dictionaries(st.sampled_from(["username", "groups", "apiGroup", "apiVersion", "resource", "namespace",
                                        "name", "subresource", "code"]), _SCALARS | st.lists(st.text(max_size=3)),
                       max_size=5))
def test_the_view_parse_reads_while_checking_is_the_view_of_the_record(record: dict, where, inner: dict) -> None:
    """parse reads the view in the pass that checks the fields; it is exactly ``view`` of the record
    (null fields included), and what it rejects for a field's shape the view could not have read as text."""
    record = {**record, "auditID": "a", "stage": "ResponseComplete", **({where: inner} if where else {})}
    out = parse(record)
    if isinstance(out, AuditEvent):
        assert out.view == view(record)


def test_the_view_of_realistic_events_and_of_null_fields() -> None:
    from bench.events import many

    for record in [*many(3000), {**GOOD, "verb": None}, {**GOOD, "user": None}, {**GOOD, "level": None},
                   {**GOOD, "objectRef": {"resource": "pods", "name": None, "apiGroup": None}}, dict(GOOD, user={})]:
        out = parse(record)
        assert isinstance(out, AuditEvent) and out.view == view(record), record


@pytest.mark.parametrize("text", [
    "2026-11-20T09:00:00.123456Z", "2026-11-20T09:00:00.000000Z", "1970-01-01T00:00:00.000001Z",
    "2026-11-20T09:00:00Z", "2026-11-20T09:00:00.123Z", "2026-11-20T09:00:00.123456+01:00",
    "2026-11-20 09:00:00.123456Z", "2026-11-20T09:00:60.123456Z", "2026-11-20T09:00:00.12345xZ",
    "2026-11-20T09:00:00.\u0661\u0662\u0663\u0664\u0665\u0666Z", "9999-12-31T23:59:59.999999Z", "", "x" * 27,
])
def test_times_read_through_the_cache_of_seconds_are_what_datetime_reads(text: str) -> None:
    from datetime import datetime

    from kube_audit.model.audit import parse_time

    try:
        want: float | None = datetime.fromisoformat(text).timestamp()
    except ValueError:
        want = None
    assert parse_time(text) == want and parse_time(text) == want  # (the second read from the cache)


def test_times_of_realistic_events_are_what_datetime_reads() -> None:
    from datetime import datetime

    from bench.events import many
    from kube_audit.model.audit import parse_time

    for record in many(2000):
        stamp = record["stageTimestamp"]
        assert parse_time(stamp) == datetime.fromisoformat(stamp).timestamp()


def _deep_lists(levels: int) -> list:
    out: list = []
    for _ in range(levels - 1):
        out = [out]
    return out


@pytest.mark.parametrize("inner", [_deep, _deep_lists])
def test_depth_is_refused_past_max_depth_exactly_whatever_the_json_holds(inner) -> None:
    """The record is the first level: requestObject nested 99 deep is 100 levels, the most taken."""
    from kube_audit.model.audit import MAX_DEPTH

    assert isinstance(parse({**GOOD, "requestObject": inner(MAX_DEPTH - 1)}), AuditEvent)
    for levels in (MAX_DEPTH, 200, 253, 254, 300):
        out = parse({**GOOD, "requestObject": inner(levels)})
        assert isinstance(out, Rejected) and out.reason == "too_deep", levels
    wide = {**GOOD, "requestObject": {"items": [{"a": [{"b": i}]} for i in range(500)]}}  # many brackets, shallow
    assert isinstance(parse(wide), AuditEvent) and parse(wide).json == orjson.dumps(wide)


def test_parse_from_many_threads_at_once_gives_each_its_own_json() -> None:
    from concurrent.futures import ThreadPoolExecutor

    records = [{**GOOD, "auditID": f"t{i}", "requestObject": {"n": list(range(i % 50))}} for i in range(4000)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(parse, records))
    assert all(isinstance(g, AuditEvent) and g.json == orjson.dumps(r) for g, r in zip(got, records, strict=True))


@pytest.mark.parametrize("path", [("auditID",), ("stage",), ("verb",), ("level",), ("user", "username"),
                                  ("objectRef", "apiGroup"), ("objectRef", "resource"), ("objectRef", "namespace"),
                                  ("objectRef", "name"), ("objectRef", "subresource")])
@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b"])
def test_no_row_column_can_hold_what_a_database_refuses(path: tuple[str, ...], bad: str) -> None:
    """The store's columns are the view's fields as they are (tailer/store/rows.py to_row, no ``clean``):
    parse must refuse a NUL or a lone surrogate in each."""
    from tailer.store.rows import to_row

    record = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": "a-1",
              "stage": "ResponseComplete", "verb": "get", "user": {"username": "alice"},
              "objectRef": {"apiGroup": "apps", "resource": "deployments", "namespace": "shop", "name": "web",
                            "subresource": "scale"}, "stageTimestamp": "2026-11-20T09:00:00.000001Z"}
    assert to_row(record) is not None
    holder: dict[str, Any] = record
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = bad
    assert not isinstance(parse(record), AuditEvent) and to_row(record) is None


def test_object_key_is_an_ordinary_frozen_object_key() -> None:
    import dataclasses

    from kube_audit.model.audit import ObjectKey, object_key

    made, plain = object_key("apps", "deployments", "shop", "web"), ObjectKey("apps", "deployments", "shop", "web")
    assert (made, hash(made), repr(made), type(made)) == (plain, hash(plain), repr(plain), ObjectKey)
    assert {plain: 1}[made] == 1 and made != ObjectKey("apps", "deployments", "shop", "api")
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.name = "other"  # type: ignore[misc]
    assert parse(GOOD).view.object == ObjectKey(*(GOOD["objectRef"].get(k, "") for k in ("apiGroup", "resource", "namespace", "name")))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400) | st.text(alphabet="{[]}\"ab:,\\", max_size=400).map(str.encode))
def test_containers_at_most_counts_every_opening_bracket(data: bytes) -> None:
    from kube_audit.model.audit import _containers_at_most

    assert _containers_at_most(data) == data.count(b"{") + data.count(b"[")


# ---- the fields the view reads, checked by msgspec for a record a decoder built (parse(..., exact=True)) ----
_ODD = st.one_of(st.none(), st.text(max_size=4), st.integers(-3, 2**40), st.booleans(), st.floats(allow_nan=False),
                 st.lists(st.text(max_size=2), max_size=2), st.dictionaries(st.text(max_size=2), st.text(max_size=2), max_size=1),
                 st.sampled_from(["", "a\x00b", "\x00", "é" * 16, "é" * 17, "x" * 63, "x" * 64, "x" * 300, "é" * 256,
                                  "é" * 257, "😀" * 64, "😀" * 300, "ResponseComplete", "2026-11-20T09:00:00.000001Z", "?dryRun=All"]))


_EDGES = [None, "", "a\x00b", "\x00", "é" * 16, "é" * 17, "x" * 63, "x" * 64, "x" * 300, "é" * 256, "é" * 257,
          "😀" * 64, "😀" * 300, "ResponseComplete", 0, -1, 2**31 - 1, 2**31, 2**64, True, 1.5, ["a"], ["a", 1], ("a",),
          {}, {"a": "b"}, EventTime(1, 2), msgpack.ExtType(5, b"x")]  # (what a decoder's ext_hook builds)
_PATHS = [(f,) for f in ("auditID", "stage", "verb", "level", "stageTimestamp", "requestURI", "user", "objectRef",
                         "responseStatus")] + [("user", f) for f in ("username", "groups")] + \
    [("objectRef", f) for f in ("apiGroup", "apiVersion", "resource", "namespace", "name", "subresource")] + \
    [("responseStatus", "code")]


@pytest.mark.parametrize("path", _PATHS, ids="/".join)
def test_msgspec_checking_one_odd_field_of_a_decoded_record_changes_no_result(path: tuple[str, ...]) -> None:
    """Each field the view reads, set to each edge value in turn (or left out), in a good record."""
    for value in [*_EDGES, KeyError]:
        record = {**GOOD, "level": "Request", "user": dict(GOOD["user"]), "objectRef": dict(GOOD["objectRef"]),
                  "responseStatus": dict(GOOD["responseStatus"])}
        holder = record if len(path) == 1 else record[path[0]]
        if value is KeyError:
            holder.pop(path[-1], None)
        else:
            holder[path[-1]] = value
        if isinstance(value, tuple):
            continue  # (not what a decoder builds: ``exact`` promises lists)
        assert parse(record, exact=True) == parse(record), (path, value)


def _holder(*fields: str, value: st.SearchStrategy = _ODD) -> st.SearchStrategy:
    return st.one_of(_ODD, st.fixed_dictionaries({}, optional={f: value for f in fields}))


_AUDIT_FIELDS = st.fixed_dictionaries({}, optional={
    **{f: _ODD for f in ("auditID", "stage", "verb", "level", "stageTimestamp", "requestURI")},
    "user": _holder("username", "groups"),
    "objectRef": _holder("apiGroup", "apiVersion", "resource", "namespace", "name", "subresource"),
    "responseStatus": _holder("code", value=st.one_of(_ODD, st.integers(2**31 - 3, 2**31 + 2), st.just(2**64))),
})


@settings(max_examples=1500, deadline=None)
@given(_AUDIT_FIELDS, st.booleans(), st.booleans())
def test_msgspec_checking_the_fields_of_a_decoded_record_changes_no_result(fields: dict, good: bool, finite: bool) -> None:
    """``exact`` (msgspec reads the view's fields: ``_quick_view``) gives what the checks alone give, for any
    value of any of those fields: NUL, too long by characters or only by bytes, null, of another type."""
    record = {**GOOD, "level": "Request", **fields} if good else fields
    assert parse(record, finite, exact=True) == parse(record, finite)


def test_msgspec_reads_the_view_of_a_good_record_and_leaves_the_rest_to_the_checks() -> None:
    """Not vacuous: the quick reading is taken for a good record, and refuses what only the checks can
    tell apart (they then accept it or say why not)."""
    from kube_audit.model.audit import _checked_view, _quick_view

    good = {**GOOD, "level": "Metadata"}
    quick = _quick_view(good)
    assert quick is not None and quick == _checked_view(good, orjson.dumps(good))
    for odd in ({"level": None}, {"user": {"username": "é" * 257}}, {"objectRef": {"resource": "a\x00"}},
                {"responseStatus": {"code": True}}, {"auditID": ""}):
        assert _quick_view({**good, **odd}) is None, odd
    long_by_characters = {**good, "user": {"username": "x" * 300}}  # past msgspec's bound, within the byte limit
    assert _quick_view(long_by_characters) is None and parse(long_by_characters, exact=True).view.user == "x" * 300
