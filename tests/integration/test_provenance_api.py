"""Provenance through the store and the API (SQLite and PostgreSQL): a `kubectl scale` is a version,
and every version carries the one change summary (issue 14)."""

from __future__ import annotations

from typing import Any

from tests.helpers.apitest import SCENARIO, Api, api_fixture, resource_tracker  # noqa: F401 - fixtures
from tests.integration.test_api import WEB

CREATE = next(e for e in SCENARIO if e["stage"] == "ResponseComplete" and e["verb"] == "create")


def scale(i: int, replicas: int) -> dict[str, Any]:
    last = CREATE
    return {**last, "auditID": f"scale-{i}", "verb": "patch", "level": "RequestResponse",
            "objectRef": {**last["objectRef"], "subresource": "scale"}, "responseStatus": {"code": 200},
            "stageTimestamp": f"2026-11-20T10:30:0{i}.000000Z", "requestObject": {"spec": {"replicas": replicas}},
            "responseObject": {"kind": "Scale", "apiVersion": "autoscaling/v1", "spec": {"replicas": replicas}}}


async def test_a_scale_is_a_version_with_its_change(api: Api) -> None:  # noqa: F811
    await api.insert([CREATE, scale(1, 7)])
    body = await api.get(WEB + "/versions")
    first, scaled = body["items"]
    assert (first["verb"], first["change"]) == ("create", "created")
    assert (scaled["subresource"], scaled["complete"], scaled["object"]["spec"]["replicas"]) == ("scale", True, 7)
    assert scaled["object"]["kind"] == "Deployment"
    assert scaled["change"] == f"spec.replicas: {first['object']['spec']['replicas']} -> 7"
