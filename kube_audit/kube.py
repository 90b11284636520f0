"""Every Kubernetes API call of the tailer and the plugin; the only module that imports ``kubernetes``.

The official client provides configuration loading (in-cluster service account, kubeconfig with its
auth plugins and TLS) and the HTTP transport. We call it with plain JSON paths rather than the typed
models: the objects we touch are custom resources and ConfigMaps handled as dicts. ``Kube`` is
blocking (the CLI uses it directly); ``AsyncKube`` runs each call in a worker thread. Errors come out as
tailer.errors: 404 -> NotFound and 409 -> Conflict are normal outcomes, not failures.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
import yaml
from kubernetes import client, config

from kube_audit.contract import API_GROUP as AUDIT_GROUP
from kube_audit.errors import (
    Conflict,
    Forbidden,
    Invalid,
    KubeError,
    KubeUnconfigured,
    NotFound,
    TooLarge,
    Unavailable,
)

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
ERROR_BODY_LIMIT = 300  # characters of an error body kept in exceptions and logs
TIMEOUT = (5.0, 30.0)  # connect, read seconds per request


@dataclass(frozen=True, slots=True)
class ApiResource:
    """One resource type as discovery describes it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def object_path(group: str, version: str, plural: str, namespace: str, name: str = "") -> str:
    path = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if namespace:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    return path + (f"/{quote(name, safe='')}" if name else "")


def in_cluster_namespace() -> str | None:
    try:
        with open(SA_NAMESPACE_FILE, encoding="utf-8") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def _retry_after(headers: Any) -> float | None:
    value = (headers or {}).get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _error(status: int, body: bytes, headers: Any, what: str) -> KubeError:
    text = body.decode("utf-8", "replace")
    try:
        message = str(json.loads(text).get("message") or text)
    except (ValueError, AttributeError):
        message = text
    message = f"{what}: {status} {message[:ERROR_BODY_LIMIT]}"
    if status == 404:
        return NotFound(message, status)
    if status == 409:
        return Conflict(message, status)
    if status in (401, 403):
        return Forbidden(message, status)
    if status == 413 or (status == 422 and ("too long" in text.lower() or "too large" in text.lower())):
        return TooLarge(message, status)
    if status in (400, 422):
        return Invalid(message, status)
    if status == 429 or status >= 500:
        return Unavailable(message, status, _retry_after(headers))
    return KubeError(message, status)


class Kube:
    """A blocking client for the few calls we make."""

    def __init__(self, api: Any, namespace: str | None = None) -> None:
        self.api = api
        self.namespace = namespace  # the kubeconfig context's namespace, or the pod's

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """In-cluster config when running in a pod (and no kubeconfig was named), else kubeconfig."""
        cfg = client.Configuration()
        namespace = None
        try:
            if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=cfg)
                namespace = in_cluster_namespace()
            else:
                config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg,
                                        persist_config=False)
                _, current = config.list_kube_config_contexts(kubeconfig)
                if context is None:
                    namespace = (current or {}).get("context", {}).get("namespace")
                else:
                    contexts, _ = config.list_kube_config_contexts(kubeconfig)
                    chosen: dict[str, Any] = next((c for c in contexts if c.get("name") == context), {})
                    namespace = chosen.get("context", {}).get("namespace")
        except yaml.YAMLError as exc:  # the kubernetes client parses the kubeconfig with PyYAML and lets this out
            raise KubeUnconfigured(f"the kubeconfig is not valid YAML: {' '.join(str(exc).split())}") from exc
        except (config.ConfigException, OSError, TypeError, ValueError) as exc:
            raise KubeUnconfigured(" ".join(str(exc).split()) or type(exc).__name__) from exc
        cfg.retries = False  # we retry ourselves (tenacity), with backoff and Retry-After
        return cls(client.ApiClient(cfg), namespace)

    def close(self) -> None:
        self.api.close()

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    def request(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
                content_type: str = "application/json") -> dict[str, Any]:
        if query:
            path += "?" + urlencode(query)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        what = f"{method} {path}"
        try:
            params = self.api.param_serialize(method, path, header_params=headers, body=body,
                                              auth_settings=["BearerToken"])
            response = self.api.call_api(*params, _request_timeout=TIMEOUT)
            data = response.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(f"{what}: {type(exc).__name__}: {str(exc)[:ERROR_BODY_LIMIT]}") from exc
        except client.ApiException as exc:
            raise _error(int(exc.status or 0), (exc.body or "").encode(), exc.headers, what) from exc
        if not 200 <= response.status <= 299:
            raise _error(response.status, data or b"", response.headers, what)
        try:
            return dict(json.loads(data)) if data else {}
        except ValueError as exc:
            raise KubeError(f"{what}: the answer is not JSON", response.status) from exc

    # objects of any resource ---------------------------------------------------------------
    def get(self, group: str, version: str, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return self.request("GET", object_path(group, version, plural, namespace, name))

    def merge_patch(self, group: str, version: str, plural: str, namespace: str, name: str,
                    patch: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", object_path(group, version, plural, namespace, name), patch,
                            content_type="application/merge-patch+json")

    # ConfigMaps ----------------------------------------------------------------------------
    def get_configmap(self, namespace: str, name: str) -> dict[str, Any]:
        return self.get("", "v1", "configmaps", namespace, name)

    def create_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", object_path("", "v1", "configmaps", namespace), body)

    def replace_configmap(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT with the body's metadata.resourceVersion: Conflict when someone wrote in between."""
        return self.request("PUT", object_path("", "v1", "configmaps", namespace, name), body)

    # discovery -----------------------------------------------------------------------------
    def resolve(self, resource: str, api_version: str | None = None) -> ApiResource:
        """Resolve ``databases``, ``databases.example.com``, a kind or a short name, like kubectl."""
        name, _, group_hint = resource.lower().partition(".")
        candidates: list[tuple[str, str]] = []  # (group, version)
        if api_version:
            group, _, version = api_version.rpartition("/")
            candidates.append((group, version))
        else:
            groups = self.request("GET", "/apis").get("groups", [])
            found = [(g["name"], g["preferredVersion"]["version"]) for g in groups
                     if not group_hint or g["name"] == group_hint]
            candidates = ([] if group_hint else [("", "v1")]) + found
        for group, version in candidates:
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            for r in self.request("GET", path).get("resources", []):
                if "/" in r["name"]:
                    continue
                names = {r["name"], r.get("singularName", ""), r["kind"].lower(), *r.get("shortNames", [])}
                if name in names:
                    return ApiResource(group, version, r["name"], r["kind"], bool(r.get("namespaced")))
        raise NotFound(f'the server doesn\'t have a resource type "{resource}"', 404)

    # authentication and authorization (for the tailer's HTTP API) ---------------------------
    def token_review(self, token: str) -> tuple[str, tuple[str, ...]] | None:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        status = self.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body).get("status", {})
        if not status.get("authenticated"):
            return None
        user = status.get("user") or {}
        return str(user.get("username", "")), tuple(user.get("groups") or ())

    def subject_access_review(self, user: str, groups: tuple[str, ...] | list[str], namespace: str,
                              verb: str = "get", resource: str = "auditevents", group: str = AUDIT_GROUP) -> bool:
        attrs = {"verb": verb, "resource": resource, "group": group}
        if namespace:
            attrs["namespace"] = namespace
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": user, "groups": list(groups), "resourceAttributes": attrs}}
        answer = self.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body)
        return bool(answer.get("status", {}).get("allowed"))


class AsyncKube:
    """The same calls for the event loop: each blocking call runs in a worker thread."""

    def __init__(self, kube: Kube) -> None:
        self.sync = kube

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> AsyncKube:
        return cls(await asyncio.to_thread(Kube.connect, kubeconfig, context))

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def get(self, group: str, version: str, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.get, group, version, plural, namespace, name)

    async def merge_patch(self, group: str, version: str, plural: str, namespace: str, name: str,
                          patch: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.merge_patch, group, version, plural, namespace, name, patch)

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.get_configmap, namespace, name)

    async def create_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.create_configmap, namespace, body)

    async def replace_configmap(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.replace_configmap, namespace, name, body)

    async def token_review(self, token: str) -> tuple[str, tuple[str, ...]] | None:
        """(user, groups) when the apiserver accepts the bearer token, else None."""
        return await asyncio.to_thread(self.sync.token_review, token)

    async def subject_access_review(self, user: str, groups: tuple[str, ...] | list[str], namespace: str,
                                    verb: str = "get", resource: str = "auditevents") -> bool:
        """May ``user`` do ``verb`` on ``resource`` in group audit.kube-audit-forwarder.io in ``namespace``?"""
        return await asyncio.to_thread(self.sync.subject_access_review, user, groups, namespace, verb, resource)


def access_reviews(kubeconfig: str | None = None) -> Kube:
    """TokenReview and SubjectAccessReview for the HTTP API (tailer/api/authz.py's ``AccessReviews``)."""
    return Kube.connect(kubeconfig)
