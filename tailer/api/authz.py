"""Who may read the audit API: bearer tokens -> an identity -> allowed namespaces.

Two authorizers behind one interface:
  - ``StaticTokens``: a token file (CSV ``token,user,namespace[,namespace...]`` or YAML list of
    ``{token, user, namespaces}``); ``*`` means cluster-wide. Re-read when the file changes. A file that
    is missing or malformed fails closed: logged once, counted, every request refused (503) until a
    valid file is back (keeping the last good tokens would keep a revoked token valid).
  - ``KubernetesAuthorizer``: TokenReview + SubjectAccessReview (``get``, ``list`` or ``watch`` on
    ``auditevents`` in group ``audit.kube-audit-forwarder.io``, in the namespace asked about; cluster-wide
    queries are checked without a namespace; ``sources`` likewise, always cluster-wide). The Kubernetes calls come from kube_audit/kube/ through
    ``AccessReviews``, async on the loop (kubernetes.aio).
Identities from the front proxy (authn.py) are authorized the same way. A namespace of "" below means the
cluster scope: queries across namespaces or on cluster-scoped objects.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import yaml

from kube_audit.runtime.observability import get_logger

API_GROUP = "audit.kube-audit-forwarder.io"
RESOURCE = "auditevents"
CLUSTER = ""
log = get_logger(component="api")


class AuthzConfigError(ValueError):
    """The token file is missing or malformed."""


class TokensUnusable(RuntimeError):
    """The token file cannot be used right now: every request is refused until it can."""


Extra = tuple[tuple[str, tuple[str, ...]], ...]  # a user's extra attributes, sorted by key


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...] = ()
    extra: Extra = ()  # from X-Remote-Extra-* (front proxy) or the TokenReview: passed on to each SubjectAccessReview


class Authorizer(Protocol):
    async def authenticate(self, token: str) -> Identity | None: ...

    async def allowed(self, who: Identity, namespace: str, verb: str = "get", resource: str = RESOURCE) -> bool:
        """May ``who`` ``verb`` (get, list, watch) ``resource`` (auditevents, sources) in ``namespace``
        ("" = cluster-wide)?"""
        ...


class AccessReviews(Protocol):
    """Kubernetes calls (async, on the loop), supplied by kube_audit/kube/ (``kube.access_reviews()``)."""

    async def token_review(self, token: str) -> tuple[str, tuple[str, ...], Extra] | None:
        """(username, groups, extra) of an authenticated token, None when not authenticated."""
        ...

    async def subject_access_review(self, user: str, groups: tuple[str, ...], namespace: str, verb: str = "get",
                                    resource: str = RESOURCE, extra: Extra = ()) -> bool:
        """Whether user/groups (with their extra attributes) may ``verb``
        ``{resource}.audit.kube-audit-forwarder.io`` in namespace ("" = all namespaces)."""
        ...


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_YAML_START = re.compile(r"^(-(\s|$)|\[|\{|[A-Za-z_][\w-]*:(\s|$))")


def _is_yaml(text: str) -> bool:
    """Chosen by content, not by the file's name: YAML starts with a list item, a flow list or map, or a key."""
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")), "")
    return bool(_YAML_START.match(first))


def _csv_entries(text: str, path: str) -> list[tuple[str, str, list[str]]]:
    entries = []
    for row in csv.reader(io.StringIO(text)):
        if not row or row[0].strip().startswith("#"):
            continue
        if len(row) < 3:
            raise AuthzConfigError(f"{path}: expected token,user,namespace[,...], got {len(row)} columns")
        entries.append((row[0].strip(), row[1].strip(), [n.strip() for n in row[2:] if n.strip()]))
    return entries


def _yaml_entries(text: str, path: str) -> list[tuple[str, str, list[str]]]:
    try:
        data = yaml.safe_load(text) or []
    except yaml.YAMLError as exc:
        raise AuthzConfigError(f"{path}: not YAML: {' '.join(str(exc).split())}") from exc
    if isinstance(data, dict):
        data = data.get("tokens") or []
    if not isinstance(data, list):
        raise AuthzConfigError(f"{path}: expected a list of {{token, user, namespaces}}")
    entries = []
    for item in data:
        if not isinstance(item, dict) or not item.get("token") or not item.get("user"):
            raise AuthzConfigError(f"{path}: every entry needs token and user")
        namespaces = item.get("namespaces", [])
        if isinstance(namespaces, str):
            namespaces = [namespaces]
        entries.append((str(item["token"]), str(item["user"]), [str(n) for n in namespaces]))
    return entries


def parse_token_file(text: str, path: str) -> dict[str, tuple[Identity, frozenset[str]]]:
    """CSV ``token,user,namespace[,...]`` lines or a YAML list of {token, user, namespaces}, told apart by content."""
    entries = _yaml_entries(text, path) if _is_yaml(text) else _csv_entries(text, path)
    out: dict[str, tuple[Identity, frozenset[str]]] = {}
    scopes: dict[str, frozenset[str]] = {}  # namespaces are looked up by user: one set per user
    for token, user, namespaces in entries:
        if not token or not user or not namespaces:
            raise AuthzConfigError(f"{path}: entry for user {user!r} needs a token and at least one namespace")
        scope = scopes.setdefault(user, frozenset(namespaces))
        if scope != frozenset(namespaces):
            raise AuthzConfigError(f"{path}: user {user!r} is listed with different namespaces; "
                                   "the tokens of one user share one set of namespaces")
        if _digest(token) in out:
            raise AuthzConfigError(f"{path}: a token is listed twice (users {out[_digest(token)][0].user!r} "
                                   f"and {user!r})")
        out[_digest(token)] = (Identity(user), scope)
    return out


class StaticTokens:
    def __init__(self, path: str, on_error: Callable[[str], None] = lambda reason: None) -> None:
        self.path, self.on_error = path, on_error
        self._stamp: tuple[int, int, int] | None = None
        self._tokens: dict[str, tuple[Identity, frozenset[str]]] = {}
        self._namespaces: dict[str, frozenset[str]] = {}
        self.error: str | None = None
        self._load()
        if self.error:
            raise AuthzConfigError(self.error)

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp == self._stamp:
                return
            with open(self.path, encoding="utf-8") as fh:
                text = fh.read()
            tokens = parse_token_file(text, self.path)
        except (OSError, AuthzConfigError, UnicodeDecodeError) as exc:
            error = (f"cannot read token file {self.path}: {exc.strerror}" if isinstance(exc, OSError)
                     else str(exc))
            self._fail(error, "missing" if isinstance(exc, OSError) else "malformed")
            return
        self._tokens, self._stamp = tokens, stamp
        self._namespaces = {ident.user: ns for ident, ns in tokens.values()}
        if self.error:
            log.info("token_file_recovered", file=self.path, tokens=len(tokens))
        self.error = None

    def _fail(self, error: str, reason: str) -> None:
        """Fail closed: no token is valid until the file is good again. Said once per distinct error."""
        self._tokens, self._namespaces, self._stamp = {}, {}, None
        if error != self.error:
            log.error("token_file_unusable", file=self.path, error=error)
            self.on_error(reason)
        self.error = error

    async def authenticate(self, token: str) -> Identity | None:
        self._load()
        if self.error:
            raise TokensUnusable(f"the API's token file is unusable, every request is refused: {self.error}")
        entry = self._tokens.get(_digest(token))
        return entry[0] if entry else None

    async def allowed(self, who: Identity, namespace: str, verb: str = "get", resource: str = RESOURCE) -> bool:
        self._load()  # sources are cluster-scoped: only a "*" token reads them
        namespaces = self._namespaces.get(who.user, frozenset())
        return "*" in namespaces or (namespace != CLUSTER and namespace in namespaces)


class KubernetesAuthorizer:
    """TokenReview and SubjectAccessReview, answers cached for ``ttl`` seconds."""

    def __init__(self, reviews: AccessReviews, ttl: float = 10.0, max_entries: int = 10_000) -> None:
        self.reviews, self.ttl, self.max_entries = reviews, ttl, max_entries
        self._cache: dict[Any, tuple[float, Any]] = {}

    async def _cached(self, key: Any, call: Any) -> Any:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
        value = await call()
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[key] = (now + self.ttl, value)
        return value

    async def authenticate(self, token: str) -> Identity | None:
        found = await self._cached(("token", _digest(token)), lambda: self.reviews.token_review(token))
        return Identity(found[0], tuple(found[1]), tuple(found[2])) if found else None

    async def allowed(self, who: Identity, namespace: str, verb: str = "get", resource: str = RESOURCE) -> bool:
        return bool(await self._cached(("sar", who, namespace, verb, resource),
                                       lambda: self.reviews.subject_access_review(who.user, who.groups, namespace,
                                                                                  verb, resource, extra=who.extra)))

    def close(self) -> None:
        """Nothing to stop: the reviews are async calls of kube_audit.kube.aio (closed with the store)."""


class Anyone:
    """``--api-auth none``: no token needed (only for loopback or a trusted network)."""

    async def authenticate(self, token: str) -> Identity | None:
        return Identity("anonymous")

    async def allowed(self, who: Identity, namespace: str, verb: str = "get", resource: str = RESOURCE) -> bool:
        return True


def build(mode: str, token_file: str | None, kubeconfig: str | None = None,
          on_error: Callable[[str], None] = lambda reason: None) -> Authorizer | None:
    """The authorizer for ``--api-auth``; None means the API is disabled (it answers 503)."""
    if mode == "token-file":
        if not token_file:
            raise AuthzConfigError("--api-auth token-file needs --token-file")
        return StaticTokens(token_file, on_error)
    if mode == "none":
        return Anyone()
    if mode == "kubernetes":
        try:
            from kube_audit.kube import aio as kube
        except ImportError as exc:
            raise AuthzConfigError("--api-auth kubernetes is not available in this build (no kube_audit/kube/)") from exc
        try:
            return KubernetesAuthorizer(kube.access_reviews(kubeconfig))
        except Exception as exc:  # no cluster: a configuration error, said once at start-up
            raise AuthzConfigError(f"--api-auth kubernetes: cannot reach the Kubernetes API: {exc}") from exc
    return None
