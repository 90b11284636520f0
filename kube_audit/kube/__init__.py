"""The one owner of the Kubernetes API: nothing outside this package imports ``kubernetes``.

``aio.py`` is the asyncio client of both daemons (``kubernetes.aio``: aiohttp underneath, no thread hops);
``blocking.py`` is the small blocking client of ``kubectl audit``: the client's kubeconfig loading
(in-cluster service account, kubeconfig with exec/OIDC plugins and TLS) with httpx requests, so the
plugin never loads aiohttp. This module holds what both share and imports no client itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kube_audit.errors import Conflict, Forbidden, Invalid, KubeError, NotFound, TooLarge, Unavailable

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
ERROR_BODY_LIMIT = 300  # characters of an error body kept in exceptions and logs


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


def candidates(resource: str, api_version: str | None, groups: list[dict[str, Any]] | None) -> list[tuple[str, str]]:
    """The (group, version) lists to search for ``resource`` (``databases.example.com`` names its group),
    as kubectl does: the core group first, then every group's preferred version. ``groups`` is the
    ``/apis`` discovery list (not needed with ``api_version``)."""
    if api_version:
        group, _, version = api_version.rpartition("/")
        return [(group, version)]
    hint = resource.lower().partition(".")[2]
    found = [(g["name"], g["preferredVersion"]["version"]) for g in groups or [] if not hint or g["name"] == hint]
    return ([] if hint else [("", "v1")]) + found


def match(resource: str, group: str, version: str, resources: list[dict[str, Any]]) -> ApiResource | None:
    """The resource of one APIResourceList that ``resource`` names: plural, singular, kind or short name."""
    name = resource.lower().partition(".")[0]
    for r in resources:
        if "/" in r["name"]:
            continue
        if name in {r["name"], r.get("singularName", ""), r["kind"].lower(), *r.get("shortNames", [])}:
            return ApiResource(group, version, r["name"], r["kind"], bool(r.get("namespaced")))
    return None


def not_found(resource: str) -> NotFound:
    return NotFound(f'the server doesn\'t have a resource type "{resource}"', 404)


def in_cluster_namespace() -> str | None:
    try:
        with open(SA_NAMESPACE_FILE, encoding="utf-8") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _retry_after(headers: Any) -> float | None:
    value = (headers or {}).get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def error(status: int, body: bytes | str, headers: Any, what: str) -> KubeError:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
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


