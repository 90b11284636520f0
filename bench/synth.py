"""Synthetic apiserver-like audit events: median 1-2 KB, ~1% of 100 KB objects. Deterministic."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any


def events(n: int, seed: int = 7, big_every: int = 100) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    verbs = ["get", "list", "watch", "create", "update", "patch", "delete"]
    for i in range(n):
        verb = rng.choice(verbs)
        ev: dict[str, Any] = {
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
            "auditID": f"{i:08x}-{rng.getrandbits(32):08x}-4000-8000-{rng.getrandbits(48):012x}",
            "stage": "ResponseComplete", "requestURI": f"/api/v1/namespaces/ns-{i % 50}/configmaps/cm-{i % 997}",
            "verb": verb, "user": {"username": f"user-{i % 13}@example.com", "groups": ["system:authenticated"]},
            "sourceIPs": [f"10.1.{i % 256}.{(i * 7) % 254 + 1}"],
            "userAgent": "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46",
            "objectRef": {"resource": "configmaps", "namespace": f"ns-{i % 50}", "name": f"cm-{i % 997}",
                          "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 200},
            "requestReceivedTimestamp": "2026-11-20T09:00:00.000000Z",
            "stageTimestamp": "2026-11-20T09:00:00.001000Z",
            "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""},
        }
        size = 100_000 if big_every and i % big_every == big_every - 1 else rng.randint(300, 1400)
        ev["requestObject"] = {"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": f"cm-{i % 997}", "namespace": f"ns-{i % 50}"},
                               "data": {"payload": "x" * size}}
        yield ev


def free_port() -> int:
    """A free loopback port for a daemon the benchmark starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
