"""Generate tests/data/scenario-deployment.log: the life of Deployment shop/web as the apiserver logs it.

Run: python tests/data/make_scenario.py > tests/data/scenario-deployment.log
create (Request level), merge patch, JSON patch, a strategic merge patch that replaces the containers
list (cannot be replayed exactly), a patch at RequestResponse level (response object), a strategic merge
patch with a $patch directive, update, merge patch, delete; plus noise that makes no version: a get, a
RequestReceived stage, a failed patch (422), a dry-run patch, a scale subresource patch.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

NS, NAME = "shop", "web"


def deployment(replicas: int, image: str, labels: dict[str, str] | None = None, rv: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": NAME, "namespace": NS, "labels": {"app": "web", **(labels or {})}}
    if rv:
        meta |= {"uid": "5d1c7f7e-0c53-4a8e-9a55-1f4b1e7b2d01", "resourceVersion": rv, "generation": 4,
                 "managedFields": [{"manager": "kubectl", "operation": "Update"}]}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}}


def event(n: int, verb: str, *, level: str = "Request", code: int = 200, request: Any = None, response: Any = None,
          stage: str = "ResponseComplete", user: str = "alice@example.com", subresource: str = "",
          query: str = "") -> dict[str, Any]:
    uri = f"/apis/apps/v1/namespaces/{NS}/deployments" + ("" if verb == "create" else f"/{NAME}")
    uri += f"/{subresource}" if subresource else ""
    ref: dict[str, Any] = {"resource": "deployments", "namespace": NS, "name": NAME, "apiGroup": "apps",
                           "apiVersion": "v1"}
    if subresource:
        ref["subresource"] = subresource
    ev: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": level,
        "auditID": f"00000000-0000-4000-8000-{n:012d}", "stage": stage, "requestURI": uri + query, "verb": verb,
        "user": {"username": user, "groups": ["system:authenticated"]}, "sourceIPs": ["10.0.0.7"],
        "userAgent": "kubectl/v1.31.2", "objectRef": ref,
        "requestReceivedTimestamp": f"2026-11-20T10:00:{n:02d}.000000Z",
        "stageTimestamp": f"2026-11-20T10:00:{n:02d}.020000Z",
    }
    if stage != "RequestReceived":
        ev["responseStatus"] = {"metadata": {}, "code": code}
    if request is not None and level != "Metadata":
        ev["requestObject"] = request
    if response is not None and level == "RequestResponse":
        ev["responseObject"] = response
    return ev


def scenario() -> list[dict[str, Any]]:
    after_label = deployment(3, "web:1.2", {"tier": "frontend"}, rv="1005")
    return [
        event(1, "create", request=deployment(1, "web:1.0"), code=201, stage="RequestReceived"),
        event(1, "create", request=deployment(1, "web:1.0"), code=201),
        event(2, "get", level="Metadata"),
        event(3, "patch", request={"spec": {"replicas": 3}}),  # merge patch
        event(4, "patch", request=[{"op": "test", "path": "/spec/replicas", "value": 3},
                                   {"op": "replace", "path": "/spec/template/spec/containers/0/image",
                                    "value": "web:1.1"}]),  # JSON patch
        event(5, "patch", code=422, request={"spec": {"replicas": -1}}),  # rejected: no version
        event(6, "patch", request={"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "web:1.2"}]}}}}),  # strategic merge: merges containers by name
        event(7, "patch", request={"spec": {"replicas": 9}}, query="?dryRun=All"),  # dry run: no version
        event(8, "patch", level="RequestResponse", request={"metadata": {"labels": {"tier": "frontend"}}},
              response=after_label, user="bob@example.com"),
        event(9, "patch", request={"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "$patch": "delete"}]}}}}),  # strategic merge directive
        event(10, "patch", subresource="scale", request={"spec": {"replicas": 4}}),  # kubectl scale: a version
        event(11, "update", request=deployment(5, "web:2.0", {"tier": "frontend"})),
        event(12, "patch", request={"spec": {"replicas": 2, "paused": None},
                                    "metadata": {"labels": {"tier": None}}}, user="bob@example.com"),
        event(13, "delete", response={"kind": "Status", "apiVersion": "v1", "status": "Success"},
              level="RequestResponse"),
    ]


if __name__ == "__main__":
    for ev in scenario():
        sys.stdout.write(json.dumps(copy.deepcopy(ev), separators=(",", ":")) + "\n")
