"""A small, honest fake of the Kubernetes API for tests: a real HTTP server in a thread.

The real ``kubernetes`` client talks to it through a generated kubeconfig. It keeps objects in memory
and behaves like the apiserver where our code depends on it: resourceVersion bumps on every write, a
PUT with a stale resourceVersion is a 409, a POST of an existing name is a 409, objects above 1 MiB are
a 422, unknown objects a 404 (ConfigMaps and Services are known), a denied (verb, resource) a 403 (our RBAC rule set), bearer token
required (401). JSON merge patch (RFC 7386) for PATCH. Plus TokenReview, SubjectAccessReview and
minimal discovery. ``unavailable = True`` answers 503 (with ``retry_after`` if set) to everything;
``hang = True`` answers nothing until ``hang`` is off again (or the fake stops): ``hanging`` counts the
requests held.
Connections close after each response (HTTP/1.0), so stopping leaves no handler thread behind.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

TOKEN = "fake-admin-token"
MAX_OBJECT_BYTES = 1024 * 1024


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class FakeKube:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}  # (group, plural, ns, name)
        self.resources: dict[tuple[str, str, str], tuple[str, bool]] = {("", "v1", "configmaps"): ("ConfigMap", True),
                                                                         ("", "v1", "services"): ("Service", True)}
        self.rv = 100
        self.unavailable = False
        self.hang = False
        self.hanging = 0  # requests held by ``hang`` right now
        self._stopping = threading.Event()
        self.retry_after: str | None = None
        self.denied: set[tuple[str, str]] = set()  # (verb, plural) our identity may not do
        # TokenReview: token -> (user, groups) or (user, groups, extra)
        self.tokens: dict[str, tuple[Any, ...]] = {}
        self.reviews: list[dict[str, Any]] = []  # the spec of every SubjectAccessReview asked
        self.allowed: set[tuple[str, str, str, str]] = set()  # SAR: (user or group:<g>, verb, resource, ns)
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="fakekube", daemon=True)

    # set-up -------------------------------------------------------------------------------
    def start(self) -> FakeKube:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases held requests
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_resource(self, group: str, version: str, plural: str, kind: str, namespaced: bool = True) -> None:
        self.resources[(group, version, plural)] = (kind, namespaced)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        cfg = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "admin", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "admin", "namespace": namespace}},
                         {"name": "other", "context": {"cluster": "fake", "user": "admin", "namespace": "other"}}],
        }
        path.write_text(json.dumps(cfg))
        return path

    def create(self, group: str, version: str, plural: str, namespace: str, name: str,
               body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Seed an object as if a user had created it."""
        kind, _ = self.resources[(group, version, plural)]
        obj = dict(body or {})
        obj.setdefault("apiVersion", f"{group}/{version}" if group else version)
        obj.setdefault("kind", kind)
        obj["metadata"] = {**obj.get("metadata", {}), "name": name, **({"namespace": namespace} if namespace else {})}
        with self.lock:
            return copy.deepcopy(self._store((group, plural, namespace, name), obj, new=True))

    def get(self, group: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects.get((group, plural, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def delete(self, group: str, plural: str, namespace: str, name: str) -> None:
        with self.lock:
            self.objects.pop((group, plural, namespace, name), None)

    def writes(self, plural: str = "configmaps") -> int:
        return sum(1 for m, p, s in self.requests if m in ("POST", "PUT", "PATCH") and f"/{plural}" in p and s < 300)

    # the store ----------------------------------------------------------------------------
    def _store(self, key: tuple[str, str, str, str], obj: dict[str, Any], new: bool) -> dict[str, Any]:
        self.rv += 1
        meta = obj["metadata"]
        if new:
            meta["uid"] = str(uuid.UUID(int=self.rv))
            meta["creationTimestamp"] = "2026-11-20T09:00:00Z"
        meta["resourceVersion"] = str(self.rv)
        self.objects[key] = obj
        return obj


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message,
            "code": code}


def _handler(fake: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            with fake.lock:
                fake.requests.append((self.command, self.path, code))

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length)) if length else None

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def do_PATCH(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def _serve(self) -> None:
            body = self._body()
            if fake.hang:
                with fake.lock:
                    fake.hanging += 1
                while fake.hang and not fake._stopping.wait(0.01):  # polling the flag, not synchronisation
                    pass
                with fake.lock:
                    fake.hanging -= 1
            if fake.unavailable:
                extra = {"Retry-After": fake.retry_after} if fake.retry_after else {}
                return self._answer(503, _status(503, "ServiceUnavailable", "apiserver is shutting down"), extra)
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._answer(401, _status(401, "Unauthorized", "Unauthorized"))
            path = urlsplit(self.path).path
            parts = [unquote(p) for p in path.strip("/").split("/")]
            with fake.lock:
                code, answer = self._route(parts, body)
            self._answer(code, answer)

        def _route(self, parts: list[str], body: Any) -> tuple[int, dict[str, Any]]:
            method = self.command
            if parts == ["api"]:
                return 200, {"kind": "APIVersions", "versions": ["v1"]}
            if parts == ["apis"]:
                groups: dict[str, str] = {}
                for g, v, _ in fake.resources:
                    if g:
                        groups.setdefault(g, v)
                return 200, {"kind": "APIGroupList", "groups": [
                    {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                     "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for g, v in groups.items()]}
            if parts[:1] == ["api"] and len(parts) == 2 or parts[:1] == ["apis"] and len(parts) == 3:
                group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
                found = [{"name": p, "singularName": k.lower(), "kind": k, "namespaced": ns,
                          "verbs": ["get", "list", "create", "update", "patch", "delete"]}
                         for (g, v, p), (k, ns) in fake.resources.items() if (g, v) == (group, version)]
                if not found:
                    return 404, _status(404, "NotFound", "the server could not find the requested resource")
                return 200, {"kind": "APIResourceList", "groupVersion": f"{group}/{version}".lstrip("/"),
                             "resources": found}
            if parts == ["apis", "authentication.k8s.io", "v1", "tokenreviews"] and method == "POST":
                if ("create", "tokenreviews") in fake.denied:
                    return 403, _status(403, "Forbidden", "tokenreviews is forbidden")
                who = fake.tokens.get(body["spec"]["token"])
                status = {"authenticated": True, "user": {"username": who[0], "groups": who[1],
                                                          **({"extra": who[2]} if len(who) > 2 else {})}} if who else {
                    "authenticated": False}
                return 201, {**body, "status": status}
            if parts == ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"] and method == "POST":
                if ("create", "subjectaccessreviews") in fake.denied:
                    return 403, _status(403, "Forbidden", "subjectaccessreviews is forbidden")
                spec = body["spec"]
                fake.reviews.append(spec)
                attrs = spec.get("resourceAttributes", {})
                subjects = [spec.get("user", "")] + [f"group:{g}" for g in spec.get("groups", [])]
                allowed = any((s, attrs.get("verb"), attrs.get("resource"), ns) in fake.allowed
                              for s in subjects for ns in (attrs.get("namespace", ""), "*"))
                return 201, {**body, "status": {"allowed": allowed}}
            return self._object(parts, body)

        def _object(self, parts: list[str], body: Any) -> tuple[int, dict[str, Any]]:
            if parts[0] == "api":
                group, version, rest = "", parts[1], parts[2:]
            elif parts[0] == "apis" and len(parts) >= 3:
                group, version, rest = parts[1], parts[2], parts[3:]
            else:
                return 404, _status(404, "NotFound", "not found")
            namespace = ""
            if len(rest) >= 2 and rest[0] == "namespaces":
                namespace, rest = rest[1], rest[2:]
            if not rest or len(rest) > 2 or (group, version, rest[0]) not in fake.resources:
                return 404, _status(404, "NotFound", "the server could not find the requested resource")
            plural, name = rest[0], (rest[1] if len(rest) == 2 else "")
            kind, namespaced = fake.resources[(group, version, plural)]
            if namespaced != bool(namespace):
                return 404, _status(404, "NotFound", "the server could not find the requested resource")
            method = self.command
            verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
                    "DELETE": "delete"}[method]
            if (verb, plural) in fake.denied:
                return 403, _status(403, "Forbidden", f'{plural} "{name}" is forbidden: cannot {verb}')
            if method == "POST":
                name = (body.get("metadata") or {}).get("name", "")
            key = (group, plural, namespace, name)
            current = fake.objects.get(key)
            if method == "GET" and name:
                return (200, current) if current else (404, _status(404, "NotFound", f'{plural} "{name}" not found'))
            if method == "GET":
                items = [o for (g, p, ns, _), o in fake.objects.items() if (g, p, ns) == (group, plural, namespace)]
                return 200, {"kind": f"{kind}List", "items": items}
            if method == "DELETE":
                if not current:
                    return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
                del fake.objects[key]
                return 200, current
            if method == "POST":
                if current:
                    return 409, _status(409, "AlreadyExists", f'{plural} "{name}" already exists')
                new = copy.deepcopy(body)
            elif current is None:
                return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
            elif method == "PUT":
                sent = (body.get("metadata") or {}).get("resourceVersion")
                if sent and sent != current["metadata"]["resourceVersion"]:
                    return 409, _status(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": '
                                        "the object has been modified; please apply your changes to the latest "
                                        "version and try again")
                new = copy.deepcopy(body)
                new["metadata"]["uid"] = current["metadata"]["uid"]
                new["metadata"]["creationTimestamp"] = current["metadata"]["creationTimestamp"]
            else:
                if self.headers.get("Content-Type") != "application/merge-patch+json":
                    return 415, _status(415, "UnsupportedMediaType", "only merge patch here")
                new = merge_patch(current, body)
            new.setdefault("metadata", {})["name"] = name
            if namespace:
                new["metadata"]["namespace"] = namespace
            new["apiVersion"], new["kind"] = f"{group}/{version}".lstrip("/"), kind
            if len(json.dumps(new)) > MAX_OBJECT_BYTES:
                return 422, _status(422, "Invalid", f'{kind} "{name}" is invalid: []: Too long: must have at '
                                    f"most {MAX_OBJECT_BYTES} bytes")
            stored = fake._store(key, new, new=method == "POST")
            return (201 if method == "POST" else 200), stored

    return Handler
