from __future__ import annotations

from tailer.audit import ObjectKey, dedup_key, redact, view
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
