"""Audit ConfigMaps, pure parts: tracking, names, entries and change summaries (kube_audit/model/entry.py),
bounded merge."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from kube_audit.contract import decode_entries, encode_entries
from kube_audit.model.audit import ObjectKey, view
from kube_audit.model.change import CHANGE_LIMIT
from kube_audit.model.entry import make_entry, state_after, summarize
from tailer.configmaps.writer import configmap_name, is_tracked, merge_entries, owner_reference

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def ev(verb: str = "patch", body: object = None, code: int = 200, sub: str = "", response: object = None) -> dict:
    e: dict = {"auditID": f"id-{verb}", "stage": "ResponseComplete", "verb": verb, "stageTimestamp": "2026-11-20T09:00:00Z",
               "user": {"username": "bob", "groups": ["dba"]}, "responseStatus": {"code": code},
               "objectRef": {"resource": "databases", "apiGroup": "example.com", "apiVersion": "v1",
                             "namespace": "shop", "name": "orders", **({"subresource": sub} if sub else {})}}
    if body is not None:
        e["requestObject"] = body
    if response is not None:
        e["responseObject"] = response
    return e


def summary(event: dict, before: dict | None = None) -> str:
    return summarize(event, view(event), before)


def test_custom_resources_are_tracked_by_default_and_track_overrides() -> None:
    db = ObjectKey("example.com", "databases", "shop", "orders")
    deploy = ObjectKey("apps", "deployments", "shop", "web")
    assert is_tracked(db) and not is_tracked(deploy)
    assert not is_tracked(ObjectKey("", "configmaps", "shop", "x"))
    assert not is_tracked(ObjectKey("rbac.authorization.k8s.io", "roles", "shop", "x"))
    assert is_tracked(deploy, [("apps", "deployments")]) and not is_tracked(db, [("apps", "deployments")])
    # a name ending in .k8s.io may still be a CRD (the Gateway API, CSI snapshots): tracked by default
    assert is_tracked(ObjectKey("gateway.networking.k8s.io", "httproutes", "shop", "r"))
    assert is_tracked(ObjectKey("snapshot.storage.k8s.io", "volumesnapshots", "shop", "s"))
    assert not is_tracked(ObjectKey("metrics.k8s.io", "pods", "shop", "p"))


def test_names_are_dns_subdomains_and_stay_unique() -> None:
    assert configmap_name("databases", "orders") == "audit-databases-orders"
    odd = configmap_name("clusterroles", "system:controller:Foo")
    assert DNS1123.match(odd) and odd.startswith("audit-clusterroles-system-controller-foo-")
    assert odd != configmap_name("clusterroles", "system-controller-foo")
    long_a, long_b = configmap_name("things", "a" * 300 + "x"), configmap_name("things", "a" * 300 + "y")
    assert len(long_a) <= 253 and DNS1123.match(long_a) and long_a != long_b


@given(st.text(min_size=1, max_size=300), st.text(alphabet="abcxyz.-", min_size=1, max_size=40))
def test_any_name_becomes_valid(name: str, resource: str) -> None:
    out = configmap_name(resource, name)
    assert len(out) <= 253 and DNS1123.match(out), out


def test_summaries() -> None:
    assert summary(ev("create", {"spec": {}})) == "created"
    assert summary(ev("delete")) == "deleted"
    assert summary(ev("patch", {"spec": {"replicas": 3}}, code=403)) == "failed (403)"
    assert summary(ev("patch", {"spec": {"replicas": 3}})) == "spec.replicas: 3"
    assert summary(ev("patch", {"spec": {"replicas": 3}}), {"spec": {"replicas": 2}}) == "spec.replicas: 2 -> 3"
    assert summary(ev("patch", {"spec": {"backup": None}}), {"spec": {"backup": "daily"}}) == (
        "spec.backup: daily -> removed")
    assert summary(ev("patch", [{"op": "replace", "path": "/spec/replicas", "value": 5}]),
                   {"spec": {"replicas": 3}}) == "spec.replicas: 3 -> 5"
    full = {"apiVersion": "example.com/v1", "kind": "Database", "metadata": {"name": "orders", "resourceVersion": "9"},
            "spec": {"replicas": 4, "version": "16"}}
    before = {"apiVersion": "example.com/v1", "kind": "Database", "metadata": {"name": "orders",
              "resourceVersion": "8"}, "spec": {"replicas": 3, "version": "16"}, "status": {"ready": True}}
    assert summary(ev("update", full), before) == "spec.replicas: 3 -> 4"
    assert summary(ev("update", full)) == "updated"
    assert summary(ev("patch", {"status": {"ready": False}}, sub="status"), before) == "status.ready: true -> false"
    assert summary(ev("patch", {"spec": {"replicas": 3}}), {"spec": {"replicas": 3}}) == "no change"
    # a JSON patch that does not apply to the known state still says what it asked for
    assert summary(ev("patch", [{"op": "replace", "path": "/spec/nope/x", "value": 1}]),
                   {"spec": {"replicas": 3}}) == "spec.nope.x: 1"
    assert summary(ev("patch")) == "patched"


def test_long_summaries_are_capped() -> None:
    body = {"spec": {f"field{i}": "x" * 30 for i in range(40)}}
    out = summary(ev("patch", body))
    assert len(out) <= CHANGE_LIMIT and out.endswith("more)"), out
    huge = summary(ev("patch", {"spec": {"k" * 500: 1}}))
    assert len(huge) <= CHANGE_LIMIT


def test_state_follows_the_object() -> None:
    obj = {"apiVersion": "example.com/v1", "kind": "Database", "metadata": {"name": "orders", "uid": "u1"},
           "spec": {"replicas": 2}}
    created = ev("create", obj, code=201, response=obj)
    state = state_after(created, view(created), None)
    assert state is not None and state["spec"]["replicas"] == 2
    patched = ev("patch", {"spec": {"replicas": 3}})
    assert state_after(patched, view(patched), state)["spec"]["replicas"] == 3
    failed = ev("patch", {"spec": {"replicas": 9}}, code=422)
    assert state_after(failed, view(failed), state) is state
    assert state_after(ev("delete"), view(ev("delete")), state) is None
    assert owner_reference(obj) == {"apiVersion": "example.com/v1", "kind": "Database", "name": "orders", "uid": "u1"}
    assert owner_reference({"kind": "Status"}) is None


def test_entry_fields() -> None:
    e = ev("patch", {"spec": {"replicas": 3}}, sub="scale")
    assert make_entry(e, view(e), None) == {
        "time": "2026-11-20T09:00:00Z", "user": "bob", "groups": ["dba"], "verb": "patch", "subresource": "scale",
        "auditID": "id-patch", "code": 200, "change": "spec.replicas: 3"}


def entry(i: int, pad: int = 0) -> dict:
    return {"time": f"2026-11-20T09:{i // 60:02d}:{i % 60:02d}Z", "auditID": f"a{i:04d}", "change": "x" * pad}


def test_merge_is_a_union_by_audit_id_sorted_by_time() -> None:
    a, b = [entry(3), entry(1)], [entry(2), entry(1)]
    merged, trimmed = merge_entries(a, b, 10_000)
    assert [e["auditID"] for e in merged] == ["a0001", "a0002", "a0003"] and trimmed == 0
    assert merge_entries(merged, b, 10_000)[0] == merged


@given(st.lists(st.integers(0, 500), max_size=60), st.integers(2, 4000))
def test_merge_stays_under_the_limit_and_keeps_the_newest(ids: list[int], limit: int) -> None:
    merged, trimmed = merge_entries([], [entry(i, 20) for i in ids], limit)
    text = encode_entries(merged)
    assert len(text.encode()) <= limit
    assert decode_entries({"data": {"entries.json": text}}) == merged
    assert trimmed == len(set(ids)) - len(merged)
    if merged:
        assert merged[-1]["auditID"] == f"a{max(ids):04d}"


def test_unreadable_configmap_reads_as_empty() -> None:
    assert decode_entries({}) == []
    assert decode_entries({"data": {"entries.json": "{not json"}}) == []
    assert decode_entries({"data": {"entries.json": json.dumps([{"auditID": "x"}, 3, {"no": "id"}])}}) == [{"auditID": "x"}]


def test_flags_and_environment(monkeypatch, capsys) -> None:
    import pytest

    from tailer.cli import parse

    s = parse(["--track", "example.com/Databases", "--track", "/configmaps", "--configmap-max-bytes", "256Ki",
               "--service-account", "system:serviceaccount:ops:tailer"]).configmaps
    assert s.track == (("example.com", "databases"), ("", "configmaps")) and s.max_bytes == 256 * 1024
    assert s.service_account == "system:serviceaccount:ops:tailer" and s.enabled and s.flush_interval == 2.0
    assert parse([]).configmaps.service_account == "system:serviceaccount:kube-audit:kube-audit-tailer"
    monkeypatch.setenv("AUDIT_TAILER_TRACK", "apps/deployments,example.com/databases")
    monkeypatch.setenv("AUDIT_TAILER_CONFIGMAP_FLUSH_INTERVAL", "500ms")
    s = parse([]).configmaps
    assert s.track == (("apps", "deployments"), ("example.com", "databases")) and s.flush_interval == 0.5
    with pytest.raises(SystemExit) as exit_info:
        parse(["--configmap-max-bytes", "2Mi"])
    assert exit_info.value.code == 2 and "1 MiB" in capsys.readouterr().err
