"""Realistic audit events of a busy cluster, deterministic (a seeded generator), for the benchmarks.

The mix follows what an apiserver with a common audit policy logs: node lease renewals and kubelet
status patches, controllers' gets/lists/watches, leader election, token and access reviews, humans and CI
changing Deployments and ConfigMaps with full request/response bodies (managedFields included), some
errors. Levels Metadata / Request / RequestResponse; unique IDs, uids, resourceVersions and timestamps
everywhere, as in a real log (no padding: ``"x" * n`` gzips 42x, a real log ~11x).

    python -m bench.events [--events 20000]   # prints mean size, gzip ratio and the mix
"""

from __future__ import annotations

import argparse
import gzip
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

START = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
NODES = [f"ip-10-0-{i // 16}-{i % 16 * 7 + 3}.eu-west-1.compute.internal" for i in range(60)]
NAMESPACES = ["default", "kube-system", "shop", "payments", "monitoring", "ingress-nginx", "cert-manager",
              "argocd", "staging", "search", "checkout", "identity"]
APPS = ["web", "api", "worker", "cart", "orders", "search-indexer", "redis", "postgres", "gateway", "auth"]
HUMANS = ["alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"]
CONTROLLERS = ["deployment-controller", "replicaset-controller", "endpointslice-controller", "namespace-controller",
               "garbage-collector", "horizontal-pod-autoscaler", "statefulset-controller", "job-controller"]
AGENTS = {"kubelet": "kubelet/v1.31.2 (linux/amd64) kubernetes/5864a46",
          "kcm": "kube-controller-manager/v1.31.2 (linux/amd64) kubernetes/5864a46/system:serviceaccount:"
                 "kube-system:{c}",
          "kubectl": "kubectl/v1.31.2 (darwin/arm64) kubernetes/5864a46",
          "argocd": "argocd-application-controller/v2.12.4+ad2a3f4",
          "prometheus": "Prometheus/2.54.1", "scheduler": "kube-scheduler/v1.31.2 (linux/amd64) kubernetes/5864a46/scheduler"}


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Cluster:
    def __init__(self, seed: int, rate: float) -> None:
        self.rng = random.Random(seed)
        self.rate = rate  # events per second of simulated time
        self.rv = 48_000_000
        self.i = 0
        self.uids: dict[str, str] = {}
        self.hexes: dict[str, str] = {}
        self.objects: dict[str, dict[str, Any]] = {}
        self.ips: dict[str, list[str]] = {}
        self.pods = [(self.rng.choice(NAMESPACES), f"{self.rng.choice(APPS)}-{self._hash(10)}-{self._hash(5)}")
                     for _ in range(250)]

    def _hash(self, n: int) -> str:
        return "".join(self.rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))

    def _uid(self, key: str | None = None) -> str:
        """A fresh uid, or the one object ``key`` always has (an object keeps its uid)."""
        if key is not None and key in self.uids:
            return self.uids[key]
        uid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        if key is not None:
            self.uids[key] = uid
        return uid

    def _hex(self, key: str) -> str:
        if key not in self.hexes:
            self.hexes[key] = f"{self.rng.getrandbits(256):064x}"
        return self.hexes[key]

    def _next_rv(self) -> str:
        self.rv += self.rng.randint(1, 40)
        return str(self.rv)

    def event(self) -> dict[str, Any]:
        r = self.rng
        when = START + timedelta(seconds=self.i / self.rate + r.random() * 0.002)
        self.i += 1
        kind = r.choices(["lease", "podstatus", "read", "watch", "election", "review", "change", "event", "secret",
                          "error"], [20, 9, 26, 10, 5, 5, 9, 9, 4, 3])[0]
        ev = getattr(self, "_" + kind)()
        ev["sourceIPs"] = self._ip(ev["user"]["username"])  # a client keeps its address
        latency = timedelta(microseconds=r.randint(400, 40_000) if ev["verb"] != "watch" else r.randint(1, 5) * 10**6)
        ev.update(kind="Event", apiVersion="audit.k8s.io/v1", auditID=self._uid(), stage="ResponseComplete",
                  requestReceivedTimestamp=_ts(when), stageTimestamp=_ts(when + latency))
        ev.setdefault("annotations", {"authorization.k8s.io/decision": "allow",
                                      "authorization.k8s.io/reason": self._reason(ev)})
        ev.setdefault("responseStatus", {"metadata": {}, "code": 200})
        return {k: ev[k] for k in ("kind", "apiVersion", "level", "auditID", "stage", "requestURI", "verb", "user",
                                   "sourceIPs", "userAgent", "objectRef", "responseStatus", "requestObject",
                                   "responseObject", "requestReceivedTimestamp", "stageTimestamp", "annotations")
                if k in ev}

    def _reason(self, ev: dict[str, Any]) -> str:
        user = ev["user"]["username"]
        if user.startswith("system:node:"):
            return ""
        if user in HUMANS:
            return 'RBAC: allowed by ClusterRoleBinding "platform-admins" of ClusterRole "cluster-admin" to Group "admins"'
        return f'RBAC: allowed by ClusterRoleBinding "system:controller:{user.rsplit(":", 1)[-1]}" of ClusterRole ' \
               f'"system:controller:{user.rsplit(":", 1)[-1]}" to ServiceAccount "{user.rsplit(":", 1)[-1]}/kube-system"'

    def _node(self) -> tuple[dict[str, Any], str]:
        n = self.rng.choice(NODES)
        return {"username": f"system:node:{n}", "groups": ["system:nodes", "system:authenticated"]}, n

    def _sa(self, name: str, ns: str = "kube-system") -> dict[str, Any]:
        return {"username": f"system:serviceaccount:{ns}:{name}", "uid": self._uid(f"sa/{ns}/{name}"),
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/credential-id": [f"JTI={self._uid(f'jti/{ns}/{name}')}"]}}

    def _ip(self, who: str = "") -> list[str]:
        if who not in self.ips:
            self.ips[who] = [f"10.0.{self.rng.randint(0, 3)}.{self.rng.randint(2, 250)}"]
        return self.ips[who]

    def _lease(self) -> dict[str, Any]:
        user, node = self._node()
        return {"level": "Metadata", "verb": "update", "user": user, "sourceIPs": self._ip(),
                "userAgent": AGENTS["kubelet"],
                "requestURI": f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}?timeout=10s",
                "objectRef": {"resource": "leases", "namespace": "kube-node-lease", "name": node,
                              "uid": self._uid(f"lease/{node}"), "apiGroup": "coordination.k8s.io", "apiVersion": "v1",
                              "resourceVersion": self._next_rv()}}

    def _podstatus(self) -> dict[str, Any]:
        user, node = self._node()
        ns, pod = self.rng.choice(self.pods)
        now = _ts(START + timedelta(seconds=self.i / self.rate))
        patch = {"metadata": {"uid": self._uid(pod)}, "status": {
            "$setElementOrder/conditions": [{"type": t} for t in
                                            ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
                                             "PodScheduled")],
            "conditions": [{"lastTransitionTime": now, "status": self.rng.choice(["True", "False"]), "type": "Ready"}],
            "containerStatuses": [{"containerID": f"containerd://{self._hex(pod)}",
                                   "image": f"registry.example.com/{pod.split('-')[0]}:1.{self.rng.randint(0, 40)}.3",
                                   "imageID": f"registry.example.com/{pod.split('-')[0]}@sha256:"
                                              f"{self._hex(pod.split('-')[0])}",
                                   "lastState": {}, "name": pod.split("-")[0], "ready": True,
                                   "restartCount": int(self._hex(pod)[0], 16) % 4, "started": True,
                                   "state": {"running": {"startedAt": now}}}]}}
        return {"level": "Request", "verb": "patch", "user": user, "sourceIPs": self._ip(),
                "userAgent": AGENTS["kubelet"], "requestURI": f"/api/v1/namespaces/{ns}/pods/{pod}/status",
                "objectRef": {"resource": "pods", "namespace": ns, "name": pod, "apiVersion": "v1",
                              "subresource": "status"},
                "requestObject": patch}

    def _read(self) -> dict[str, Any]:
        r = self.rng
        ns = r.choice(NAMESPACES)
        resource, group = r.choice([("pods", ""), ("configmaps", ""), ("services", ""), ("endpointslices",
                                    "discovery.k8s.io"), ("deployments", "apps"), ("replicasets", "apps"),
                                    ("nodes", ""), ("persistentvolumeclaims", "")])
        prefix = f"/apis/{group}/v1" if group else "/api/v1"
        who = r.random()
        user = self._sa(r.choice(CONTROLLERS)) if who < 0.7 else self._sa("prometheus", "monitoring")
        agent = AGENTS["kcm"].format(c=user["username"].rsplit(":", 1)[-1]) if who < 0.7 else AGENTS["prometheus"]
        if r.random() < 0.6:
            name = r.choice(self.pods)[1] if resource == "pods" else r.choice(APPS)
            verb, uri = "get", f"{prefix}/namespaces/{ns}/{resource}/{name}"
            ref = {"resource": resource, "namespace": ns, "name": name, "apiVersion": "v1"}
        else:
            verb, uri = "list", f"{prefix}/namespaces/{ns}/{resource}?labelSelector=app%3D{r.choice(APPS)}&limit=500"
            ref = {"resource": resource, "namespace": ns, "apiVersion": "v1"}
        if group:
            ref["apiGroup"] = group
        return {"level": "Metadata", "verb": verb, "user": user, "sourceIPs": self._ip(), "userAgent": agent,
                "requestURI": uri, "objectRef": ref}

    def _watch(self) -> dict[str, Any]:
        ev = self._read()
        ev["verb"] = "watch"
        ev["requestURI"] = ev["requestURI"].split("?")[0].rsplit("/", 1)[0] + \
            f"?allowWatchBookmarks=true&resourceVersion={self._next_rv()}&timeout=7m{self.rng.randint(0, 59)}s&watch=true"
        ev["objectRef"].pop("name", None)
        return ev

    def _election(self) -> dict[str, Any]:
        who = self.rng.choice(["kube-controller-manager", "kube-scheduler", "cloud-controller-manager"])
        user = {"username": f"system:{who}", "groups": ["system:authenticated"]}
        return {"level": "Metadata", "verb": "update", "user": user, "sourceIPs": ["10.0.0.1"],
                "userAgent": AGENTS["scheduler"] + "/leader-election",
                "requestURI": f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{who}?timeout=5s",
                "objectRef": {"resource": "leases", "namespace": "kube-system", "name": who,
                              "uid": self._uid(f"lease/{who}"), "apiGroup": "coordination.k8s.io", "apiVersion": "v1",
                              "resourceVersion": self._next_rv()}}

    def _review(self) -> dict[str, Any]:
        user = self._sa("metrics-server")
        spec = {"resourceAttributes": {"namespace": self.rng.choice(NAMESPACES), "verb": "get",
                                       "resource": "pods", "group": ""}, "user": self.rng.choice(HUMANS),
                "groups": ["admins", "system:authenticated"]}
        return {"level": "RequestResponse", "verb": "create", "user": user, "sourceIPs": self._ip(),
                "userAgent": "metrics-server/v0.7.2 (linux/amd64) kubernetes/$Format",
                "requestURI": "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                "objectRef": {"resource": "subjectaccessreviews", "apiGroup": "authorization.k8s.io",
                              "apiVersion": "v1"},
                "responseStatus": {"metadata": {}, "code": 201},
                "requestObject": {"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                                  "metadata": {"creationTimestamp": None}, "spec": spec, "status": {"allowed": False}},
                "responseObject": {"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                                   "metadata": {"creationTimestamp": None}, "spec": spec,
                                   "status": {"allowed": True, "reason": "RBAC: allowed by ClusterRoleBinding"}}}

    def _object(self, ns: str, name: str, kind: str) -> dict[str, Any]:
        """The object as it is now: built once, then each change bumps its resourceVersion and generation."""
        key = f"{kind}/{ns}/{name}"
        obj = self.objects.get(key)
        if obj is None:
            obj = self.objects[key] = self._new_object(ns, name, kind)
        obj = orjson.loads(orjson.dumps(obj))
        obj["metadata"]["resourceVersion"] = self._next_rv()
        obj["metadata"]["generation"] += 1
        if "spec" in obj:
            obj["spec"]["replicas"] = self.rng.randint(1, 12)
        self.objects[key] = obj
        return obj

    def _new_object(self, ns: str, name: str, kind: str) -> dict[str, Any]:
        r = self.rng
        app = name.split("-")[0]
        ts = _ts(START - timedelta(days=r.randint(1, 300)))
        meta = {"name": name, "namespace": ns, "uid": self._uid(f"{kind}/{ns}/{name}"), "resourceVersion": self._next_rv(),
                "generation": r.randint(1, 90), "creationTimestamp": ts,
                "labels": {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": ns,
                           "app.kubernetes.io/version": f"1.{r.randint(0, 40)}.{r.randint(0, 9)}"},
                "annotations": {"deployment.kubernetes.io/revision": str(r.randint(1, 200)),
                                "argocd.argoproj.io/tracking-id": f"{ns}-{app}:apps/Deployment:{ns}/{name}"},
                "managedFields": [{"manager": m, "operation": "Update", "apiVersion": "apps/v1", "time": ts,
                                   "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app.kubernetes.io/name": {}}},
                                                "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {
                                                    "f:containers": {f'k:{{"name":"{app}"}}': {"f:image": {}}}}}}}}
                                  for m in ("argocd-controller", "kube-controller-manager")]}
        if kind == "ConfigMap":
            return {"kind": kind, "apiVersion": "v1", "metadata": meta,
                    "data": {f"{k}.yaml": f"{k}:\n  level: {r.choice(['info', 'debug'])}\n  endpoint: "
                             f"https://{app}.{ns}.svc.cluster.local:{r.randint(1024, 9999)}\n  "
                             f"timeout: {r.randint(1, 60)}s\n  token_id: {self._hex(ns + name)[:24]}\n"
                             for k in r.sample(["logging", "server", "cache", "features", "limits"], 3)}}
        container = {"name": app, "image": f"registry.example.com/{app}:1.{r.randint(0, 40)}.{r.randint(0, 9)}",
                     "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                     "env": [{"name": "LOG_LEVEL", "value": r.choice(["info", "debug"])},
                             {"name": "GOMAXPROCS", "value": str(r.randint(1, 8))}],
                     "resources": {"requests": {"cpu": f"{r.randint(1, 20) * 50}m", "memory": f"{r.randint(1, 16) * 64}Mi"},
                                   "limits": {"memory": f"{r.randint(2, 32) * 64}Mi"}},
                     "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10}}
        return {"kind": kind, "apiVersion": "apps/v1", "metadata": meta,
                "spec": {"replicas": r.randint(1, 12), "selector": {"matchLabels": {"app.kubernetes.io/name": app}},
                         "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%",
                                                                                 "maxUnavailable": "25%"}},
                         "template": {"metadata": {"labels": {"app.kubernetes.io/name": app}},
                                      "spec": {"containers": [container], "serviceAccountName": app}}},
                "status": {"observedGeneration": meta["generation"], "replicas": r.randint(1, 12),
                           "readyReplicas": r.randint(1, 12)}}

    def _change(self) -> dict[str, Any]:
        r = self.rng
        ns = r.choice(NAMESPACES)
        kind, resource, group = r.choice([("Deployment", "deployments", "apps"), ("ConfigMap", "configmaps", "")])
        name = f"{r.choice(APPS)}" + ("-config" if kind == "ConfigMap" else "")
        human = r.random() < 0.4
        user = {"username": r.choice(HUMANS), "groups": ["admins", "system:authenticated"]} if human else \
            self._sa("argocd-application-controller", "argocd")
        verb = r.choices(["patch", "update", "create", "delete"], [50, 35, 10, 5])[0]
        prefix = "/apis/apps/v1" if group else "/api/v1"
        obj = self._object(ns, name, kind)
        ev: dict[str, Any] = {
            "level": "RequestResponse", "verb": verb, "user": user, "sourceIPs": self._ip(),
            "userAgent": AGENTS["kubectl"] if human else AGENTS["argocd"],
            "requestURI": f"{prefix}/namespaces/{ns}/{resource}" + ("" if verb == "create" else f"/{name}")
                          + ("?fieldManager=kubectl-client-side-apply&fieldValidation=Strict" if human else ""),
            "objectRef": {"resource": resource, "namespace": ns, "name": name, "apiVersion": "v1",
                          **({"apiGroup": group} if group else {})},
            "responseStatus": {"metadata": {}, "code": 201 if verb == "create" else 200}}
        if verb == "patch":
            ev["requestObject"] = {"spec": {"replicas": r.randint(1, 12)}} if kind != "ConfigMap" else \
                {"data": {"features.yaml": f"features:\n  beta: {r.choice(['true', 'false'])}\n"}}
        elif verb in ("update", "create"):
            ev["requestObject"] = obj
        if verb != "delete":
            ev["responseObject"] = obj
        else:
            ev["responseObject"] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                    "details": {"name": name, "group": group, "kind": resource, "uid": obj["metadata"]["uid"]}}
        return ev

    def _event(self) -> dict[str, Any]:
        r = self.rng
        ns, pod = r.choice(self.pods)
        name = f"{pod}.{0x1800000000000000 + self.i * 7919:016x}"  # the apiserver names events by time
        reason, message = r.choice([("Pulled", f'Container image "registry.example.com/{pod.split("-")[0]}:1.4.2" '
                                                'already present on machine'),
                                    ("Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503"),
                                    ("Scheduled", f"Successfully assigned {ns}/{pod} to {r.choice(NODES)}"),
                                    ("BackOff", "Back-off restarting failed container")])
        user, node = self._node()
        return {"level": "Request", "verb": "create", "user": user, "sourceIPs": self._ip(),
                "userAgent": AGENTS["kubelet"], "requestURI": f"/api/v1/namespaces/{ns}/events",
                "objectRef": {"resource": "events", "namespace": ns, "name": name, "apiVersion": "v1"},
                "responseStatus": {"metadata": {}, "code": 201},
                "requestObject": {"kind": "Event", "apiVersion": "v1",
                                  "metadata": {"name": name, "namespace": ns},
                                  "involvedObject": {"kind": "Pod", "namespace": ns, "name": pod, "uid": self._uid(pod),
                                                     "apiVersion": "v1", "resourceVersion": self._next_rv()},
                                  "reason": reason, "message": message, "source": {"component": "kubelet", "host": node},
                                  "firstTimestamp": _ts(START), "lastTimestamp": _ts(START), "count": 1,
                                  "type": "Warning" if reason in ("Unhealthy", "BackOff") else "Normal",
                                  "reportingComponent": "kubelet", "reportingInstance": node}}

    def _secret(self) -> dict[str, Any]:
        ev = self._read()
        ns = ev["objectRef"]["namespace"]
        name = f"{self.rng.choice(APPS)}-tls"
        ev.update(verb="get", requestURI=f"/api/v1/namespaces/{ns}/secrets/{name}",
                  objectRef={"resource": "secrets", "namespace": ns, "name": name, "apiVersion": "v1"})
        return ev

    def _error(self) -> dict[str, Any]:
        ev = self._read() if self.rng.random() < 0.7 else self._change()
        code, reason = self.rng.choice([(404, "NotFound"), (409, "Conflict"), (403, "Forbidden"), (422, "Invalid")])
        ev["responseStatus"] = {"metadata": {}, "status": "Failure", "reason": reason, "code": code,
                                "message": f'{ev["objectRef"]["resource"]} "{ev["objectRef"].get("name", "")}" '
                                           f"{reason.lower()}"}
        ev.pop("responseObject", None)
        if code == 403:
            ev["annotations"] = {"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": ""}
        return ev


def events(n: int, seed: int = 7, rate: float = 500.0) -> Iterator[dict[str, Any]]:
    """``n`` events, ``rate`` per second of simulated time from 2026-11-20T09:00Z."""
    cluster = Cluster(seed, rate)
    for _ in range(n):
        yield cluster.event()


def many(n: int, seed: int = 7, rate: float = 500.0, pool: int = 20_000, start: float = 0.0
         ) -> Iterator[dict[str, Any]]:
    """``n`` events fast, for big stores: ``pool`` generated ones repeated with new auditIDs and times
    (``rate`` per second from ``start`` seconds after 2026-11-20T09:00Z)."""
    templates = list(events(min(n, pool), seed, rate))
    base = START.timestamp()
    for i in range(n):
        t = templates[i % len(templates)]
        when = datetime.fromtimestamp(base + start + i / rate, UTC)
        yield {**t, "auditID": f"{seed:02x}{i:010x}-{t['auditID'][12:]}", "requestReceivedTimestamp": _ts(when),
               "stageTimestamp": _ts(when + timedelta(microseconds=800 + i % 9000))}


def describe(records: list[dict[str, Any]], chunk: int = 1000) -> dict[str, Any]:
    lines = [orjson.dumps(r) + b"\n" for r in records]
    raw = sum(len(line) for line in lines)
    packed = sum(len(gzip.compress(b"".join(lines[i:i + chunk]), 6)) for i in range(0, len(lines), chunk))
    mix = Counter((r["level"], r["verb"]) for r in records)
    return {"events": len(records), "mean_bytes": round(raw / len(records)), "gzip_ratio": round(raw / packed, 1),
            "mix": {f"{lv}/{vb}": round(100 * c / len(records), 1) for (lv, vb), c in mix.most_common(8)}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    print(describe(list(events(args.events))))


if __name__ == "__main__":
    main()
