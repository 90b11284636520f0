"""The forwarder's one Kubernetes call, and the only forwarder module that imports ``kubernetes``.

With ``--tailer-service ns/name`` the tailer's address is the Service's cluster IP and its port named
``forward`` (or its only port), looked up again before every connection so that a changed Service is
followed. The call is blocking (the official client), so it runs in a worker thread. A failed lookup is
a TransportError: retried with the forwarder's backoff like any other step of reaching the tailer.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import urllib3
from kubernetes import client, config

from .errors import ConfigError, TransportError

TIMEOUT = (5.0, 10.0)  # connect, read seconds
PORT_NAME = "forward"


def service_address(service: Any, what: str) -> tuple[str, int]:
    """spec.clusterIP and the port named ``forward``, else the single port."""
    spec = service.spec
    ip = spec.cluster_ip if spec is not None else None
    if not ip or ip == "None":
        raise TransportError("tailer_service", f"{what} has no cluster IP (headless?)")
    ports = list(spec.ports or [])
    named = [p for p in ports if p.name == PORT_NAME]
    if named:
        return ip, int(named[0].port)
    if len(ports) == 1:
        return ip, int(ports[0].port)
    raise TransportError("tailer_service", f"{what} has {len(ports)} ports and none is named {PORT_NAME!r}")


class ServiceResolver:
    """Looks up the tailer Service through the API (kubeconfig if given, else in-cluster)."""

    def __init__(self, service: tuple[str, str], kubeconfig: str | None) -> None:
        self.namespace, self.name = service
        cfg = client.Configuration()
        try:
            if kubeconfig:
                config.load_kube_config(config_file=kubeconfig, client_configuration=cfg, persist_config=False)
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=cfg)
            else:
                raise ConfigError("--tailer-service needs --kubeconfig outside a cluster")
        except (config.ConfigException, OSError, TypeError, ValueError) as exc:
            raise ConfigError(f"--tailer-service: cannot load the Kubernetes configuration: {exc}") from exc
        cfg.retries = False  # the forwarder's backoff retries
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)

    def lookup(self) -> tuple[str, int]:
        what = f"Service {self.namespace}/{self.name}"
        try:
            service = self.core.read_namespaced_service(self.name, self.namespace, _request_timeout=TIMEOUT)
        except client.ApiException as exc:
            raise TransportError("tailer_service", f"GET {what}: {exc.status} {exc.reason}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransportError("tailer_service", f"GET {what}: Kubernetes API unreachable: "
                                                   f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        return service_address(service, what)

    async def __call__(self) -> tuple[str, int]:
        return await asyncio.to_thread(self.lookup)

    def close(self) -> None:
        self.api.close()
