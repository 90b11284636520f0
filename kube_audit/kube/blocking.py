"""The blocking Kubernetes client of ``kubectl audit``: the official client's kubeconfig loading (in-cluster
service account, kubeconfig contexts, exec/OIDC credential plugins, client certificates) and httpx for the
requests, so the plugin never loads aiohttp or an event loop. Errors are kube_audit.errors; a missing or
broken kubeconfig is one line (KubeUnconfigured), never a traceback."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import httpx
import yaml
from kubernetes import client, config

from kube_audit.errors import KubeError, KubeUnconfigured, Unavailable
from kube_audit.kube import (
    ERROR_BODY_LIMIT,
    ApiResource,
    candidates,
    error,
    in_cluster_namespace,
    match,
    not_found,
    one_line,
)

TIMEOUT = httpx.Timeout(30.0, connect=5.0)
MERGE_PATCH = "application/merge-patch+json"
# what the client's kubeconfig loading raises for a missing, unreadable or malformed file
CONFIG_ERRORS = (config.ConfigException, OSError, TypeError, ValueError, AttributeError, KeyError, yaml.YAMLError)


def _unconfigured(exc: BaseException) -> KubeUnconfigured:
    if isinstance(exc, yaml.YAMLError):  # the client parses the kubeconfig with PyYAML and lets this out
        return KubeUnconfigured(f"the kubeconfig is not valid YAML: {one_line(exc)}")
    return KubeUnconfigured(one_line(exc))


def context_namespace(kubeconfig: str | None = None, context: str | None = None) -> str | None:
    """The namespace of a kubeconfig context (the current one by default), or in a pod the pod's; None
    when there is no kubeconfig or the context names none. Reads files only (no credentials, no network).
    KubeUnconfigured when a kubeconfig is there but broken."""
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster_namespace()
    if kubeconfig is None:
        paths = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        if not any(os.path.exists(p) for p in paths.split(os.pathsep) if p):
            return None
    try:
        contexts, current = config.list_kube_config_contexts(kubeconfig)
        chosen = current if context is None else next((c for c in contexts if c.get("name") == context), None)
        if chosen is None:
            raise config.ConfigException(f"context {context!r} not found in the kubeconfig")
        return (chosen.get("context") or {}).get("namespace") or None
    except CONFIG_ERRORS as exc:
        raise _unconfigured(exc) from exc


def load(kubeconfig: str | None = None, context: str | None = None) -> client.Configuration:
    """The client configuration: in-cluster when in a pod and no kubeconfig was named, else kubeconfig."""
    cfg = client.Configuration()
    try:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
        else:
            config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg,
                                    persist_config=False)
    except CONFIG_ERRORS as exc:
        raise _unconfigured(exc) from exc
    return cfg


def http_client(cfg: client.Configuration) -> httpx.Client:
    """An httpx client that speaks to ``cfg.host`` with ``cfg``'s credentials and trust."""
    headers = {"Accept": "application/json"}
    token = cfg.get_api_key_with_prefix("BearerToken", alias="authorization")  # refreshes exec plugins
    basic = cfg.get_basic_auth_token() if (cfg.username or cfg.password) else None
    if token or basic:
        headers["Authorization"] = str(token or basic)
    verify: Any = (cfg.ssl_ca_cert or True) if cfg.verify_ssl else False
    cert: Any = (cfg.cert_file, cfg.key_file) if cfg.cert_file and cfg.key_file else cfg.cert_file or None
    return httpx.Client(base_url=cfg.host, headers=headers, verify=verify, cert=cert, timeout=TIMEOUT)


def object_path(group: str, version: str, plural: str, namespace: str, name: str = "") -> str:
    path = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if namespace:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    return path + (f"/{quote(name, safe='')}" if name else "")


class Kube:
    """The few calls the plugin makes, blocking."""

    def __init__(self, http: httpx.Client, namespace: str | None = None) -> None:
        self.http = http
        self.namespace = namespace  # the kubeconfig context's namespace, or the pod's

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        cfg = load(kubeconfig, context)
        return cls(http_client(cfg), context_namespace(kubeconfig, context))

    def close(self) -> None:
        self.http.close()

    @property
    def host(self) -> str:
        return str(self.http.base_url).rstrip("/")

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                params: dict[str, str] | None = None) -> dict[str, Any]:
        what = f"{method} {path}"
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            response = self.http.request(method, path, json=body, headers=headers, params=params)
        except httpx.HTTPError as exc:
            raise Unavailable(f"{what}: {type(exc).__name__}: {str(exc)[:ERROR_BODY_LIMIT]}") from exc
        if not response.is_success:
            raise error(response.status_code, response.content, response.headers, what)
        try:
            return dict(response.json()) if response.content else {}
        except ValueError as exc:
            raise KubeError(f"{what}: the answer is not JSON", response.status_code) from exc

    # objects of any resource ---------------------------------------------------------------
    def get(self, group: str, version: str, plural: str, namespace: str, name: str) -> dict[str, Any]:
        return self.request("GET", object_path(group, version, plural, namespace, name))

    def merge_patch(self, group: str, version: str, plural: str, namespace: str, name: str,
                    patch: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", object_path(group, version, plural, namespace, name), patch, MERGE_PATCH)

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
        groups = None if api_version else self.request("GET", "/apis").get("groups", [])
        for group, version in candidates(resource, api_version, groups):
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            found = match(resource, group, version, self.request("GET", path).get("resources", []))
            if found is not None:
                return found
        raise not_found(resource)
