"""Every Kubernetes API call of both daemons (the tailer and the forwarder).

Async on the official client's asyncio flavour (``kubernetes.aio``: aiohttp underneath, its own
credential loading: in-cluster service account, kubeconfig with exec/OIDC plugins and TLS), so no call
hops to a thread. The typed APIs give the paths; where we handle objects as dicts (ConfigMaps we
merge, objects of any resource) we ask them for the raw JSON (``*_without_preload_content``) so that
fields the models do not know survive a read-modify-write. Objects of any resource go through the
dynamic client's ``Resource`` paths. The Service lookup and the reviews use the typed models.

``AsyncKube`` is the client of both daemons. Errors come out as kube_audit.errors with the cause kept:
404 -> NotFound and 409 -> Conflict are normal outcomes. The plugin's blocking client is blocking.py.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp
import yaml
from kubernetes.aio import client, config
from kubernetes.aio.dynamic import DynamicClient
from kubernetes.aio.dynamic.resource import Resource

from kube_audit.contract import API_GROUP as AUDIT_GROUP
from kube_audit.errors import (
    Invalid,
    KubeError,
    KubeUnconfigured,
    Unavailable,
)
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

TIMEOUT = 30.0  # seconds per request, connect included
MERGE_PATCH = "application/merge-patch+json"
PORT_NAME = "forward"  # the tailer Service's port the forwarder uses
T = TypeVar("T")
Extra = tuple[tuple[str, tuple[str, ...]], ...]  # a user's extra attributes, sorted by key (hashable: cache keys)


async def _call(what: str, call: Awaitable[T]) -> T:
    """Await one client call; translate the client's and aiohttp's errors into ours."""
    try:
        return await call
    except client.ApiException as exc:
        raise error(int(exc.status or 0), exc.body or "", exc.headers, what) from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise Unavailable(f"{what}: {type(exc).__name__}: {str(exc)[:ERROR_BODY_LIMIT]}") from exc


async def _json(what: str, call: Awaitable[Any]) -> dict[str, Any]:
    """A ``*_without_preload_content`` call: the body as a dict, or our error for its status."""

    async def read() -> dict[str, Any]:
        response = await call
        data = await response.read()
        if not 200 <= response.status <= 299:
            raise error(response.status, data or b"", response.headers, what)
        try:
            return dict(json.loads(data)) if data else {}
        except ValueError as exc:
            raise KubeError(f"{what}: the answer is not JSON", response.status) from exc

    return await _call(what, read())


async def load_configuration(kubeconfig: str | None = None,
                             context: str | None = None) -> tuple[client.Configuration, str | None]:
    """In-cluster config when running in a pod (and no kubeconfig was named), else kubeconfig.

    Returns the configuration and the namespace of the kubeconfig context (or of the pod)."""
    cfg = client.Configuration()
    try:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
            return cfg, in_cluster_namespace()
        await config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg,
                                      persist_config=False)
        contexts, current = config.list_kube_config_contexts(kubeconfig)
        chosen = current if context is None else next((c for c in contexts if c.get("name") == context), {})
        return cfg, (chosen or {}).get("context", {}).get("namespace")
    except _CONFIG_ERRORS as exc:
        raise KubeUnconfigured(one_line(exc)) from exc


def _configmap(body: dict[str, Any]) -> client.V1ConfigMap:
    model = client.V1ConfigMap.from_dict(body)
    if model is None:
        raise Invalid("a ConfigMap body must be an object")
    return model


class AsyncKube:
    """The few calls we make, on the event loop."""

    def __init__(self, api: client.ApiClient, namespace: str | None = None) -> None:
        self.api = api
        self.namespace = namespace  # the kubeconfig context's namespace, or the pod's
        self.core = client.CoreV1Api(api)
        self.dynamic = DynamicClient(api)  # used for paths of any resource; discovery is not loaded

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> AsyncKube:
        cfg, namespace = await load_configuration(kubeconfig, context)
        cfg.retries = None  # we retry ourselves (tenacity), with backoff and Retry-After
        return cls(client.ApiClient(cfg), namespace)

    async def close(self) -> None:
        await self.api.close()

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    # objects of any resource ---------------------------------------------------------------
    def _resource(self, group: str, version: str, plural: str, namespace: str) -> Resource:
        return Resource(prefix="apis" if group else "api", group=group, api_version=version, kind=plural,
                        name=plural, namespaced=bool(namespace), client=self.dynamic)

    async def get(self, group: str, version: str, plural: str, namespace: str, name: str) -> dict[str, Any]:
        resource = self._resource(group, version, plural, namespace)
        what = f"GET {resource.path(name, namespace)}"
        response = await _call(what, self.dynamic.get(resource, name, namespace or None, serialize=False,
                                                      _request_timeout=TIMEOUT))
        return dict(await _call(what, response.json()))

    async def merge_patch(self, group: str, version: str, plural: str, namespace: str, name: str,
                          patch: dict[str, Any]) -> dict[str, Any]:
        resource = self._resource(group, version, plural, namespace)
        what = f"PATCH {resource.path(name, namespace)}"
        response = await _call(what, self.dynamic.patch(resource, patch, name, namespace or None,
                                                        content_type=MERGE_PATCH, serialize=False,
                                                        _request_timeout=TIMEOUT))
        return dict(await _call(what, response.json()))

    # ConfigMaps ----------------------------------------------------------------------------
    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any]:
        return await _json(f"GET configmap {namespace}/{name}", self.core.read_namespaced_config_map_without_preload_content(
            name, namespace, _request_timeout=TIMEOUT))

    async def create_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = (body.get("metadata") or {}).get("name", "")
        return await _json(f"POST configmap {namespace}/{name}",
                           self.core.create_namespaced_config_map_without_preload_content(
                               namespace, _configmap(body), _request_timeout=TIMEOUT))

    async def replace_configmap(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT with the body's metadata.resourceVersion: Conflict when someone wrote in between."""
        return await _json(f"PUT configmap {namespace}/{name}",
                           self.core.replace_namespaced_config_map_without_preload_content(
                               name, namespace, _configmap(body), _request_timeout=TIMEOUT))

    # Services (the forwarder's --tailer-service) -------------------------------------------
    async def service_address(self, namespace: str, name: str, port_name: str = PORT_NAME) -> tuple[str, int]:
        """spec.clusterIP and the port named ``port_name``, else the single port; KubeError if neither."""
        what = f"GET Service {namespace}/{name}"
        service = await _call(what, self.core.read_namespaced_service(name, namespace, _request_timeout=TIMEOUT))
        spec = service.spec
        ip = spec.cluster_ip if spec is not None else None
        if not ip or ip == "None":
            raise Invalid(f"Service {namespace}/{name} has no cluster IP (headless?)")
        ports = list(spec.ports or []) if spec is not None else []
        named = [p for p in ports if p.name == port_name]
        if named:
            return ip, int(named[0].port)
        if len(ports) == 1:
            return ip, int(ports[0].port)
        raise Invalid(f"Service {namespace}/{name} has {len(ports)} ports and none is named {port_name!r}")

    # discovery -----------------------------------------------------------------------------
    async def resolve(self, resource: str, api_version: str | None = None) -> ApiResource:
        """Resolve ``databases``, ``databases.example.com``, a kind or a short name, like kubectl."""
        groups = None
        if not api_version:
            apis = client.ApisApi(self.api)
            groups = (await _json("GET /apis", apis.get_api_versions_without_preload_content(
                _request_timeout=TIMEOUT))).get("groups", [])
        objects = client.CustomObjectsApi(self.api)
        for group, version in candidates(resource, api_version, groups):
            if group:
                call = objects.get_api_resources_without_preload_content(group, version, _request_timeout=TIMEOUT)
            else:
                call = self.core.get_api_resources_without_preload_content(_request_timeout=TIMEOUT)
            found = match(resource, group, version, (await _json(f"GET /apis/{group}/{version}", call)).get(
                "resources", []))
            if found is not None:
                return found
        raise not_found(resource)

    # authentication and authorization (for the tailer's HTTP API) ---------------------------
    async def token_review(self, token: str) -> tuple[str, tuple[str, ...], Extra] | None:
        """(user, groups, extra) when the apiserver accepts the bearer token, else None."""
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
        api = client.AuthenticationV1Api(self.api)
        answer = await _call("POST tokenreviews", api.create_token_review(body, _request_timeout=TIMEOUT))
        status = answer.status
        if status is None or not status.authenticated:
            return None
        user = status.user
        if user is None:
            return "", (), ()
        extra = tuple(sorted((str(k), tuple(str(v) for v in vs or ())) for k, vs in (user.extra or {}).items()))
        return str(user.username or ""), tuple(user.groups or ()), extra

    async def subject_access_review(self, user: str, groups: tuple[str, ...] | list[str], namespace: str,
                                    verb: str = "get", resource: str = "auditevents",
                                    group: str = AUDIT_GROUP, extra: Extra = ()) -> bool:
        """May ``user`` do ``verb`` on ``resource`` in ``group`` (audit.kube-audit-forwarder.io) in ``namespace``?
        ``extra``: the user's extra attributes (scopes, credential id...), which authorizers other than RBAC
        may decide on: a scoped token must not be authorized as its unscoped user."""
        attrs = client.V1ResourceAttributes(verb=verb, resource=resource, group=group, namespace=namespace or None)
        body = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
            user=user, groups=list(groups), resource_attributes=attrs,
            extra={k: list(v) for k, v in extra} or None))
        api = client.AuthorizationV1Api(self.api)
        answer = await _call("POST subjectaccessreviews", api.create_subject_access_review(
            body, _request_timeout=TIMEOUT))
        return bool(answer.status and answer.status.allowed)


# what the client's kubeconfig loading raises for a missing, unreadable or malformed file
_CONFIG_ERRORS = (config.ConfigException, OSError, TypeError, ValueError, AttributeError, KeyError, yaml.YAMLError)


class LazyReviews:
    """TokenReview and SubjectAccessReview for the HTTP API (tailer/api/authz.py's ``AccessReviews``).

    Built synchronously while the tailer starts; the kubeconfig is checked then (a clear error at
    start-up), the client is connected on the first review."""

    def __init__(self, kubeconfig: str | None) -> None:
        self.kubeconfig = kubeconfig
        if not (kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST")):
            try:
                config.list_kube_config_contexts(kubeconfig)
            except _CONFIG_ERRORS as exc:
                raise KubeUnconfigured(one_line(exc)) from exc
        self._kube: AsyncKube | None = None
        self._lock = asyncio.Lock()

    async def _client(self) -> AsyncKube:
        async with self._lock:
            if self._kube is None:
                self._kube = await AsyncKube.connect(self.kubeconfig)
            return self._kube

    async def token_review(self, token: str) -> tuple[str, tuple[str, ...], Extra] | None:
        return await (await self._client()).token_review(token)

    async def subject_access_review(self, user: str, groups: tuple[str, ...], namespace: str,
                                    verb: str = "get", resource: str = "auditevents", extra: Extra = ()) -> bool:
        return await (await self._client()).subject_access_review(user, groups, namespace, verb, resource,
                                                                  extra=extra)

    async def close(self) -> None:
        if self._kube is not None:
            await self._kube.close()


def access_reviews(kubeconfig: str | None = None) -> LazyReviews:
    return LazyReviews(kubeconfig)
