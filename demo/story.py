"""What the demo's apiserver does: 40 audit events, among them the life of one object, and when things break.

shop/orders (a databases.example.com Database) is created by alice, scaled by bob, upgraded by carol and
deleted by alice; around it other users read and change other objects. Between the events the demo rotates
the audit log, kills the forwarder and restarts the tailer (``ACTIONS``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from kube_audit.writer import make_event

ORDERS = ("example.com", "v1", "databases", "Database", "shop", "orders")
OTHERS = [("example.com", "v1", "databases", "Database", "shop", "payments"),
          ("apps", "v1", "deployments", "Deployment", "shop", "web"),
          ("", "v1", "configmaps", "ConfigMap", "shop", "settings"),
          ("", "v1", "pods", "Pod", "shop", "web-7d9f8-x2x4q")]
USERS = {"alice": ("alice@example.com", ["dba"]), "bob": ("bob@example.com", ["dev"]),
         "carol": ("carol@example.com", ["dba"]),
         "controller": ("system:serviceaccount:kube-system:deployment-controller", ["system:serviceaccounts"])}
TOTAL = 40

# event index -> (user, verb, request spec, spec after it): the story the history and diff tell at the end
STORY: dict[int, tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]] = {
    1: ("alice", "create", {"replicas": 1, "version": "15"}, None),
    11: ("bob", "patch", {"replicas": 3}, {"replicas": 3, "version": "15"}),
    20: ("carol", "update", {"replicas": 3, "version": "16"}, None),
    36: ("alice", "delete", None, None),
}
# event index -> what happens just before that event is written
ACTIONS = {8: "rotate", 15: "kill_forwarder", 22: "rotate", 24: "start_forwarder", 28: "stop_tailer",
           33: "start_tailer"}


@dataclass
class Planned:
    index: int
    user: str
    verb: str
    obj: tuple[str, str, str, str, str, str]
    spec: dict[str, Any] | None = None
    state: dict[str, Any] | None = None

    def event(self) -> dict[str, Any]:
        """The audit event, stamped now: the times in the history are the times the demo wrote them."""
        user, groups = USERS[self.user]
        code = 201 if self.verb == "create" else 200
        return make_event(user, groups, self.verb, self.obj, self.spec, self.state, code=code)


def plan(seed: int = 14) -> list[Planned]:
    rng = random.Random(seed)
    out = []
    for index in range(TOTAL):
        if index in STORY:
            user, verb, spec, state = STORY[index]
            out.append(Planned(index, user, verb, ORDERS, spec, state))
            continue
        obj = rng.choice(OTHERS)
        verb = rng.choice(["get", "get", "get", "patch", "update"] if obj[2] != "pods" else ["get", "delete"])
        user = "controller" if obj[2] in ("deployments", "pods") and verb != "get" else rng.choice(["alice", "bob",
                                                                                                   "carol"])
        spec = {"replicas": rng.randint(1, 4)} if verb in ("patch", "update") else None
        out.append(Planned(index, user, verb, obj, spec))
    return out


def row(event: dict[str, Any]) -> str:
    """One event as the live view shows it, in 80 columns: time, user (a service account by its name), verb,
    object (resource namespace/name), code."""
    ref = event.get("objectRef") or {}
    where = f"{ref['namespace']}/" if ref.get("namespace") else ""
    stamp = str(event.get("requestReceivedTimestamp", ""))
    time = stamp[11:23] if len(stamp) >= 23 else stamp
    user = str((event.get("user") or {}).get("username", "?"))
    if user.startswith("system:serviceaccount:"):  # its name is what a reader needs here; the rest is in the file
        user = user.rsplit(":", 1)[-1]
    if len(user) > 21:
        user = user[:20] + "…"
    code = (event.get("responseStatus") or {}).get("code", "")
    obj = f"{ref.get('resource', '?')} {where}{ref.get('name', '')}"
    return f"{time} {user:<21} {event.get('verb', '?'):<6} {obj:<25} {code}"
