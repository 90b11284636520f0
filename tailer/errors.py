"""The tailer's one exception tree. Kubernetes errors live with the module that owns the cluster
(kube_audit.errors) and are re-exported here for the tailer's stages."""

from __future__ import annotations

from kube_audit.errors import (  # noqa: F401  (re-exported)
    Conflict,
    Forbidden,
    Invalid,
    KubeError,
    KubeUnconfigured,
    NotFound,
    TooLarge,
    Unavailable,
)


class TailerError(Exception):
    """Base of every error the tailer raises on purpose."""


class StoreUnavailable(TailerError):
    """The audit store cannot be opened (path, permissions, database URL)."""
