"""Generate tests/data/audit-sample.log: real-looking audit.k8s.io/v1 events, deterministic.

Run: python tests/data/make_sample.py > tests/data/audit-sample.log
Covers every level (Metadata, Request, RequestResponse), verbs (get, list, watch, create, update,
patch, delete, deletecollection), stages (RequestReceived, ResponseStarted, ResponseComplete, Panic),
subresources, a Secret, cluster-scoped objects, failures (403, 404, 409, 422), and a few large objects.
"""

from __future__ import annotations

import json
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta


def ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(rng: random.Random, t: datetime, **kw: object) -> dict[str, object]:
    verb = kw.get("verb", "get")
    level = kw.get("level", "Metadata")
    stage = kw.get("stage", "ResponseComplete")
    resource = kw.get("resource", "pods")
    ns = kw.get("namespace", "default")
    name = kw.get("name")
    group = kw.get("group", "")
    version = kw.get("version", "v1")
    user = kw.get("user", "alice@example.com")
    code = kw.get("code", 200)
    ref: dict[str, object] = {"resource": resource, "apiVersion": f"{group}/{version}" if group else version}
    if group:
        ref["apiGroup"] = group
    if ns:
        ref["namespace"] = ns
    if name:
        ref["name"] = name
    if kw.get("subresource"):
        ref["subresource"] = kw["subresource"]
    path = "/apis/" + group + "/" + str(version) if group else "/api/v1"
    if ns:
        path += f"/namespaces/{ns}"
    path += f"/{resource}" + (f"/{name}" if name else "")
    ev: dict[str, object] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": level,
        "auditID": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "stage": stage,
        "requestURI": path + ("?watch=true" if verb == "watch" else ""),
        "verb": verb,
        "user": {"username": user, "groups": kw.get("groups", ["system:authenticated"])},
        "sourceIPs": [f"10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}"],
        "userAgent": kw.get("agent", "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46"),
        "objectRef": ref,
        "requestReceivedTimestamp": ts(t - timedelta(milliseconds=rng.randint(1, 40))),
        "stageTimestamp": ts(t),
    }
    if stage != "RequestReceived":
        ev["responseStatus"] = {"metadata": {}, "code": code}
        if code >= 400:
            ev["responseStatus"].update({"status": "Failure", "reason": kw.get("reason", "Forbidden")})  # type: ignore[union-attr]
    if "request" in kw and level in ("Request", "RequestResponse"):
        ev["requestObject"] = kw["request"]
    if "response" in kw and level == "RequestResponse" and stage == "ResponseComplete":
        ev["responseObject"] = kw["response"]
    ev["annotations"] = {"authorization.k8s.io/decision": "allow" if code != 403 else "forbid",
                         "authorization.k8s.io/reason": ""}
    return ev


def main() -> None:
    rng = random.Random(42)
    t = datetime(2026, 11, 20, 9, 0, 0, tzinfo=UTC)
    out = []
    db = {"apiVersion": "example.com/v1", "kind": "Database", "metadata": {"name": "orders", "namespace": "shop"},
          "spec": {"engine": "postgres", "version": "15", "replicas": 1, "storage": "10Gi"}}
    for i in range(200):
        t += timedelta(milliseconds=rng.randint(5, 900))
        kind = rng.random()
        if kind < 0.35:
            out.append(event(rng, t, verb=rng.choice(["get", "list", "watch"]), resource="pods",
                             namespace=rng.choice(["default", "kube-system", "shop"]),
                             user="system:serviceaccount:kube-system:coredns", agent="coredns/v1.11"))
        elif kind < 0.5:
            name = f"web-{i}"
            cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "shop"},
                  "data": {"index.html": "<h1>hello</h1>" * rng.randint(1, 20)}}
            for stage in ("RequestReceived", "ResponseComplete"):
                out.append(event(rng, t, verb="create", resource="configmaps", namespace="shop", name=name,
                                 level="RequestResponse", stage=stage, request=cm, response=cm, code=201))
        elif kind < 0.6:
            db = json.loads(json.dumps(db))
            db["spec"]["replicas"] = rng.randint(1, 5)
            patch = {"spec": {"replicas": db["spec"]["replicas"]}}
            out.append(event(rng, t, verb="patch", resource="databases", group="example.com", namespace="shop",
                             name="orders", level="RequestResponse", request=patch, response=db,
                             user="bob@example.com", groups=["system:authenticated", "dba"]))
        elif kind < 0.7:
            secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-pass", "namespace": "shop"},
                      "data": {"password": "c2VjcmV0"}}
            out.append(event(rng, t, verb="update", resource="secrets", namespace="shop", name="db-pass",
                             level="Metadata", request=secret))
        elif kind < 0.78:
            out.append(event(rng, t, verb="delete", resource="pods", namespace="default", name=f"job-{i}",
                             level="Request", code=rng.choice([200, 404])))
        elif kind < 0.84:
            out.append(event(rng, t, verb="get", resource="nodes", namespace=None, name="node-1",
                             user="system:node:node-1", groups=["system:nodes"], agent="kubelet/v1.31.2"))
        elif kind < 0.9:
            out.append(event(rng, t, verb="create", resource="pods", namespace="shop", name=f"p-{i}",
                             subresource="exec", stage="ResponseStarted", code=101, level="Metadata"))
        elif kind < 0.95:
            out.append(event(rng, t, verb="update", resource="deployments", group="apps", namespace="shop",
                             name="api", code=rng.choice([403, 409, 422]), reason="Conflict"))
        else:
            big = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"big-{i}", "namespace": "shop"},
                   "data": {f"key{j}": "x" * 1000 for j in range(rng.randint(20, 150))}}
            out.append(event(rng, t, verb="update", resource="configmaps", namespace="shop", name=f"big-{i}",
                             level="RequestResponse", request=big, response=big))
    out.append(event(rng, t, verb="deletecollection", resource="pods", namespace="ci", stage="Panic", code=500,
                     reason="InternalError"))
    for ev in out:
        sys.stdout.write(json.dumps(ev, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
