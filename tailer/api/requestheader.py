"""The front proxy's settings from the cluster, as aggregated API servers read them.

kube-apiserver publishes its request-header configuration in the ConfigMap
``kube-system/extension-apiserver-authentication``: ``requestheader-client-ca-file`` (PEM) and
``requestheader-allowed-names``, ``-username-headers``, ``-group-headers``, ``-extra-headers-prefix``
(JSON lists). With ``--requestheader-from-cluster`` the tailer reads it at start and every ``interval``
seconds, writes the CA where the API port's TLS context reloads it from, and updates the header names. A
failed refresh keeps the last good settings (logged once per distinct error).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace
from typing import Any

from kube_audit.runtime.observability import get_logger
from tailer.api.authn import FrontProxy

NAMESPACE, NAME = "kube-system", "extension-apiserver-authentication"
DEFAULTS = FrontProxy()
log = get_logger(component="api")


class RequestHeaderError(RuntimeError):
    """The ConfigMap is missing, unreadable, or has no request-header CA."""


def _names(data: dict[str, str], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = data.get(key)
    if not raw:
        return default
    try:
        value = json.loads(raw)
    except ValueError:
        raise RequestHeaderError(f"{NAMESPACE}/{NAME}: {key} is not a JSON list") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestHeaderError(f"{NAMESPACE}/{NAME}: {key} is not a list of strings")
    return tuple(value)


def parse(configmap: dict[str, Any], base: FrontProxy = DEFAULTS) -> tuple[str, FrontProxy]:
    """(CA PEM, front proxy settings) from the ConfigMap; header names not given keep ``base``'s."""
    data = configmap.get("data") or {}
    ca = data.get("requestheader-client-ca-file") or ""
    if "BEGIN CERTIFICATE" not in ca:
        raise RequestHeaderError(f"{NAMESPACE}/{NAME} has no requestheader-client-ca-file: the apiserver runs "
                                 "without --requestheader-client-ca-file (no aggregation layer)")
    return ca, replace(
        base, allowed_names=_names(data, "requestheader-allowed-names", ()),
        username_headers=_names(data, "requestheader-username-headers", base.username_headers),
        group_headers=_names(data, "requestheader-group-headers", base.group_headers),
        extra_prefixes=_names(data, "requestheader-extra-headers-prefix", base.extra_prefixes))


def write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class ClusterRequestHeader:
    """Reads the ConfigMap through kube_audit.kube.aio (a client per read: one read every few minutes)."""

    def __init__(self, kubeconfig: str | None, ca_path: str, base: FrontProxy, interval: float = 300.0) -> None:
        self.kubeconfig, self.ca_path, self.base, self.interval = kubeconfig, ca_path, base, interval
        self._error: str | None = None

    async def _fetch(self) -> dict[str, Any]:
        from kube_audit.kube.aio import AsyncKube

        kube = await AsyncKube.connect(self.kubeconfig)
        try:
            return dict(await kube.get_configmap(NAMESPACE, NAME))
        finally:
            await kube.close()

    async def load(self) -> FrontProxy:
        try:
            configmap = await self._fetch()
        except RequestHeaderError:
            raise
        except Exception as exc:  # the owning module's errors and OS errors alike
            raise RequestHeaderError(f"cannot read {NAMESPACE}/{NAME}: {exc}") from exc
        ca, proxy = parse(configmap, self.base)
        current = open(self.ca_path, encoding="utf-8").read() if os.path.exists(self.ca_path) else None
        if current != ca:
            write_atomically(self.ca_path, ca)
            log.info("requestheader_loaded", ca_file=self.ca_path, allowed_names=list(proxy.allowed_names))
        return proxy

    async def follow(self, apply: Any) -> None:
        """Refresh forever; ``apply(front_proxy)`` takes new header settings."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                apply(await self.load())
                self._error = None
            except RequestHeaderError as exc:
                if str(exc) != self._error:
                    log.error("requestheader_refresh_failed", error=str(exc))
                self._error = str(exc)

    def close(self) -> None:
        """Nothing held between reads."""
