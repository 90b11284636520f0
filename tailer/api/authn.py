"""Who is asking: authentication as an aggregated API server does it, and the API port's TLS.

In order, like kube-apiserver's request-header and token authenticators:
  1. Front proxy: the kube-aggregator connects with a client certificate signed by the request-header CA
     (``--requestheader-client-ca-file``; the TLS layer verifies it) whose common name is in
     ``--requestheader-allowed-names`` (empty: any name that CA signed), and says who the user is in
     ``X-Remote-User``, ``X-Remote-Group`` (repeatable) and ``X-Remote-Extra-<key>`` (header names
     configurable as in kube-apiserver). Without such a certificate these headers are ignored: anybody
     can send a header.
  2. A bearer token: TokenReview (``--api-auth kubernetes``) or the static token file.
Then the authorizer (authz.py) decides, by SubjectAccessReview or the token file's namespaces.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from kube_audit.runtime.observability import get_logger
from kube_audit.runtime.tls import ReloadingContext, TLSConfigError, TLSFiles, server_context
from tailer.api.authz import RESOURCE, Anyone, Authorizer, Identity, TokensUnusable
from tailer.api.errors import ApiError

log = get_logger(component="api")


@dataclass(frozen=True)
class FrontProxy:
    allowed_names: tuple[str, ...] = ()  # common names of the proxy's client certificate; empty: any
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)

    def identity(self, request: web.Request) -> Identity | None:
        """The user the proxy vouches for, or None when the request did not come through it."""
        cert = _peer_certificate(request)
        if cert is None:
            return None
        names = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
        if self.allowed_names and not set(names) & set(self.allowed_names):
            log.warning("front_proxy_name_refused", common_names=names)
            raise ApiError(401, "Unauthorized", "the client certificate's common name is not in "
                           "--requestheader-allowed-names")
        user = next((request.headers[h] for h in self.username_headers if request.headers.get(h)), "")
        if not user:
            return None  # a verified certificate but no user: the next authenticator decides
        groups = tuple(g for h in self.group_headers for g in request.headers.getall(h, ()))
        extra: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            for prefix in self.extra_prefixes:
                if name.lower().startswith(prefix.lower()):
                    extra.setdefault(unquote(name[len(prefix):]).lower(), []).append(value)
        return Identity(user, groups, tuple((k, tuple(v)) for k, v in sorted(extra.items())))


def _peer_certificate(request: web.Request) -> dict[str, Any] | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()  # only a certificate that the request-header CA verified is here
    return cert or None


class Authenticator:
    def __init__(self, authorizer: Authorizer | None, front_proxy: FrontProxy | None = None) -> None:
        self.authorizer, self.front_proxy = authorizer, front_proxy

    async def identify(self, request: web.Request) -> Identity:
        if self.authorizer is None:
            raise ApiError(503, "ServiceUnavailable", "the audit API is disabled: start the tailer with "
                           "--token-file, --api-auth kubernetes or --api-auth none")
        if self.front_proxy is not None:
            who = self.front_proxy.identity(request)
            if who is not None:
                return who
        if isinstance(self.authorizer, Anyone):
            return Identity("anonymous")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        found = None
        if scheme.lower() == "bearer" and token.strip():
            try:
                found = await self.authorizer.authenticate(token.strip())
            except TokensUnusable as exc:
                raise ApiError(503, "ServiceUnavailable", str(exc)) from None
        if found is None:
            raise ApiError(401, "Unauthorized", "a valid bearer token is required")
        return found

    async def allowed(self, who: Identity, namespace: str, verb: str, resource: str = RESOURCE) -> bool:
        assert self.authorizer is not None  # identify() refused the request otherwise
        return await self.authorizer.allowed(who, namespace, verb, resource)


def api_tls(files: TLSFiles, client_ca: str | None) -> ssl.SSLContext:
    """The listening context of the API port: its own certificate, reloaded when the files change (for
    each new connection), and client certificates verified against the request-header CA when given."""

    def build(f: TLSFiles) -> ssl.SSLContext:
        ctx = server_context(TLSFiles(cert=f.cert, key=f.key), verify_client=False)
        if f.ca:
            try:
                ctx.load_verify_locations(cafile=f.ca)
            except (OSError, ssl.SSLError) as exc:
                raise TLSConfigError(f"cannot load --requestheader-client-ca-file {f.ca}: {exc}") from exc
            ctx.verify_mode = ssl.CERT_OPTIONAL  # a proxy certificate, or none (bearer tokens)
        return ctx

    watched = TLSFiles(ca=client_ca, cert=files.cert, key=files.key)
    reloading = ReloadingContext(watched, build)
    listening = build(watched)

    def swap(sslobj: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        try:
            sslobj.context = reloading.get()  # the hello is in: switch to the current certificate
        except TLSConfigError as exc:  # a Secret half-updated: keep serving the last good one
            log.warning("api_tls_reload_failed", error=str(exc))

    listening.sni_callback = swap
    return listening
