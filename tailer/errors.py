"""The tailer's one exception tree. Foreign errors (the kubernetes client, urllib3) are translated at
the edge where they enter (tailer/kube.py) with the cause kept."""

from __future__ import annotations


class TailerError(Exception):
    """Base of every error the tailer raises on purpose."""


class KubeUnconfigured(TailerError):
    """No in-cluster service account and no usable kubeconfig: the Kubernetes sinks stay off."""


class KubeError(TailerError):
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


class StoreUnavailable(TailerError):
    """The audit store cannot be opened (path, permissions, database URL)."""
