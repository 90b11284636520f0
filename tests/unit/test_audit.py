from __future__ import annotations

from kube_audit.model.audit import ObjectKey, dedup_key, redact, view
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
