from __future__ import annotations

import pytest

from kube_audit.model.provenance import (
    MISSING,
    PatchError,
    apply_patch,
    diff,
    get_field,
    json_patch,
    merge_patch,
    parse_field,
    versions,
)


@pytest.mark.parametrize(("target", "patch", "result"), [  # RFC 7386 appendix A
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_merge_patch_rfc7386_examples(target, patch, result) -> None:
    assert merge_patch(target, patch) == result


def test_json_patch_rfc6902_operations() -> None:
    doc = {"foo": ["bar", "baz"], "a/b": 1, "m~n": 2}
    ops = [
        {"op": "add", "path": "/foo/1", "value": "qux"},
        {"op": "add", "path": "/foo/-", "value": "end"},
        {"op": "remove", "path": "/foo/0"},
        {"op": "replace", "path": "/a~1b", "value": 10},
        {"op": "move", "from": "/m~0n", "path": "/moved"},
        {"op": "copy", "from": "/foo", "path": "/copy"},
        {"op": "test", "path": "/moved", "value": 2},
    ]
    assert json_patch(doc, ops) == {"foo": ["qux", "baz", "end"], "a/b": 10, "moved": 2,
                                    "copy": ["qux", "baz", "end"]}
    assert doc == {"foo": ["bar", "baz"], "a/b": 1, "m~n": 2}  # input untouched


@pytest.mark.parametrize("ops", [
    [{"op": "replace", "path": "/missing", "value": 1}],
    [{"op": "remove", "path": "/foo/5"}],
    [{"op": "test", "path": "/foo/0", "value": "nope"}],
    [{"op": "add", "path": "/foo/01", "value": 1}],
    [{"op": "frobnicate", "path": "/foo"}],
    ["not an op"],
])
def test_json_patch_errors(ops) -> None:
    with pytest.raises(PatchError):
        json_patch({"foo": ["bar"]}, ops)


def test_patch_inference_and_its_honest_limits() -> None:
    state = {"kind": "Deployment", "spec": {"containers": [{"name": "a", "image": "1"}]}}
    assert apply_patch(state, [{"op": "add", "path": "/spec/paused", "value": True}], True)[1] == "json"
    new, kind, reason = apply_patch(state, {"spec": {"containers": [{"name": "a", "image": "2"}]}}, False)
    assert (kind, reason) == ("merge", "") and new["spec"]["containers"] == [{"name": "a", "image": "2"}]
    new, kind, reason = apply_patch(state, {"spec": {"containers": [{"name": "a", "image": "2"}]}}, True)
    assert new is None and "strategic merge" in reason
    new, kind, reason = apply_patch(state, {"spec": {"$retainKeys": ["x"]}}, True)
    assert new is None and kind == "strategic" and "$retainKeys" in reason
    new, kind, reason = apply_patch(state, {"apiVersion": "apps/v1", "kind": "Deployment"}, True)
    assert new is None and kind == "apply"
    new, _, reason = apply_patch(state, [{"op": "remove", "path": "/nope"}], True)
    assert new is None and "does not apply" in reason


def test_fields_and_diff() -> None:
    obj = {"spec": {"containers": [{"image": "x"}]}}
    assert parse_field("spec.containers[0].image") == parse_field("spec.containers.0.image") == [
        "spec", "containers", 0, "image"]
    assert get_field(obj, "spec.containers[0].image") == "x"
    assert get_field(obj, "spec.containers[1].image") is MISSING
    assert diff({"a": 1, "b": [1, 2], "c": {"d": 1}}, {"a": 2, "b": [1], "e": True}) == [
        {"op": "replace", "path": "a", "from": 1, "to": 2},
        {"op": "remove", "path": "b[1]", "from": 2},
        {"op": "remove", "path": "c", "from": {"d": 1}},
        {"op": "add", "path": "e", "to": True},
    ]
    assert diff(1, True) == [{"op": "replace", "path": "", "from": 1, "to": True}]


def test_a_patch_without_a_known_state_is_incomplete_and_a_create_restores_it() -> None:
    def ev(verb, request, n):
        return (n, {"stage": "ResponseComplete", "verb": verb, "responseStatus": {"code": 200},
                    "objectRef": {"resource": "widgets", "name": "w"}, "requestObject": request})

    vs = versions([ev("patch", {"spec": {"a": 1}}, 1), ev("create", {"kind": "W", "spec": {"a": 2}}, 2),
                   ev("patch", {"spec": {"a": 3}}, 3)])
    assert [(v["complete"], v.get("reason")) for v in vs] == [
        (False, "no known state before this patch"), (True, None), (True, None)]
    assert vs[2]["object"] == {"kind": "W", "spec": {"a": 3}}


def test_describe_change_in_words() -> None:
    from kube_audit.model.provenance import describe_change

    old = {"metadata": {"resourceVersion": "1", "labels": {"a": "1"}}, "spec": {"replicas": 2, "image": "web:1"}}
    new = {"metadata": {"resourceVersion": "2", "labels": {}}, "spec": {"replicas": 3, "image": "web:1", "x": True},
           "status": {"ready": 1}}
    # the words of the ConfigMap entries (one summariser): "path: old -> removed"
    assert describe_change(old, new) == "metadata.labels.a: 1 -> removed, spec.replicas: 2 -> 3, spec.x: true"
    assert describe_change(None, new) == "created" and describe_change(old, None) == "deleted"
    assert describe_change(old, old) == "no change"
    assert describe_change({"spec": {"a": "x" * 200}}, {"spec": {"a": "y"}}, width=30).endswith("…")


def test_kubectl_scale_makes_a_version() -> None:
    """Regression (issue 14): writes to the scale subresource made no version, so a `kubectl scale` was
    missing from the history and the versions after it showed the old replicas."""
    def ev(n, verb, sub, request=None, response=None):
        return (n, {"stage": "ResponseComplete", "verb": verb, "responseStatus": {"code": 200},
                    "objectRef": {"resource": "deployments", "apiGroup": "apps", "name": "web",
                                  **({"subresource": sub} if sub else {})},
                    "requestObject": request, "responseObject": response})

    deploy = {"kind": "Deployment", "spec": {"replicas": 1, "template": {"x": 1}}}
    scale = {"kind": "Scale", "apiVersion": "autoscaling/v1", "spec": {"replicas": 4}, "status": {"replicas": 1}}
    vs = versions([ev(1, "create", "", deploy),
                   ev(2, "patch", "scale", {"spec": {"replicas": 3}}),  # kubectl scale --replicas 3
                   ev(3, "update", "scale", {**scale, "spec": {"replicas": 2}}),
                   ev(4, "patch", "scale", [{"op": "replace", "path": "/spec/replicas", "value": 5}]),
                   ev(5, "patch", "scale", {"spec": {"replicas": 9}}, response=scale),  # the response wins
                   ev(6, "get", "scale")], builtin=True)
    assert [(v["version"], v["subresource"], v["complete"], v["object"]["spec"]["replicas"]) for v in vs] == [
        (1, "", True, 1), (2, "scale", True, 3), (3, "scale", True, 2), (4, "scale", True, 5), (5, "scale", True, 4)]
    assert vs[4]["object"]["spec"]["template"] == {"x": 1} and vs[4]["object"]["kind"] == "Deployment"
    assert [v["change"] for v in vs] == ["created", "spec.replicas: 1 -> 3", "spec.replicas: 3 -> 2",
                                         "spec.replicas: 2 -> 5", "spec.replicas: 5 -> 4"]
    alone = versions([ev(1, "patch", "scale", {"spec": {"replicas": 3}})], builtin=True)
    assert alone[0]["complete"] is False and "no known state" in alone[0]["reason"]
