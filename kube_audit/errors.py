"""Errors of the shared Kubernetes module (kube_audit/kube/), translated there from the kubernetes
client and urllib3 with the cause kept. 404 -> NotFound and 409 -> Conflict are normal outcomes."""

from __future__ import annotations


class KubeAuditError(Exception):
    """Base of every error the shared modules raise on purpose."""


class KubeUnconfigured(KubeAuditError):
    """No in-cluster service account and no usable kubeconfig: the Kubernetes sinks stay off."""


class KubeError(KubeAuditError):
    """The Kubernetes API answered with an error (or not at all)."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after  # seconds, from the Retry-After header when the server sent one


class NotFound(KubeError):
    """404: a normal outcome (object deleted, ConfigMap not created yet)."""


class Conflict(KubeError):
    """409: stale resourceVersion or already exists; a normal outcome, read again and retry."""


class Forbidden(KubeError):
    """401 or 403: our identity may not do this (RBAC)."""


class TooLarge(KubeError):
    """413, or 422 about size: the object would exceed what the apiserver stores."""


class Invalid(KubeError):
    """400 or 422: the apiserver refused the object as sent."""


class Unavailable(KubeError):
    """Connection failed, 429 or 5xx: try again later (honour ``retry_after``)."""


