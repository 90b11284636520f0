"""Redaction: Secret values and credentials out of audit events. Pure, no I/O.

Secrets (core ``secrets``): ``data`` and ``stringData`` values in every form an event carries them
(the object of a create or update, merge and JSON patches, a SecretList or ``kind: List``, a Table as
kubectl get asks for it, and kubectl's last-applied annotation, which holds the whole applied object).
Keys stay, values become "<redacted>". Credentials: the bearer token of a TokenReview (``spec.token``)
and the token a TokenRequest returns (``status.token`` of ``serviceaccounts/token``).
"""

from __future__ import annotations

import copy
from typing import Any

REDACTED = "<redacted>"
SECRET_FIELDS = ("data", "stringData")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
LAST_APPLIED_POINTER = "kubectl.kubernetes.io~1last-applied-configuration"
# (apiGroup, resource, subresource) -> (top field, field) holding a credential in request or response
TOKEN_FIELDS = {("authentication.k8s.io", "tokenreviews", ""): ("spec", "token"),
                ("", "serviceaccounts", "token"): ("status", "token")}
RESOURCES = frozenset({"secrets", *(resource for _, resource, _ in TOKEN_FIELDS)})  # the only ones redaction touches


def _ref(event: dict[str, Any]) -> dict[str, Any]:
    ref = event.get("objectRef")
    return ref if isinstance(ref, dict) else {}


def is_secret(event: dict[str, Any]) -> bool:
    ref = _ref(event)
    return ref.get("resource") == "secrets" and not ref.get("apiGroup")


def token_field(event: dict[str, Any]) -> tuple[str, str] | None:
    ref = _ref(event)
    return TOKEN_FIELDS.get((str(ref.get("apiGroup") or ""), str(ref.get("resource") or ""),
                             str(ref.get("subresource") or "")))


def _redact_annotations(annotations: Any) -> Any:
    if isinstance(annotations, dict) and LAST_APPLIED in annotations:
        annotations[LAST_APPLIED] = REDACTED
    return annotations


def _redact_object(obj: Any) -> Any:
    """Redact in place: a Secret, any list of them (SecretList, List, a Table with objects), a patch."""
    if isinstance(obj, list):  # a JSON patch (RFC 6902)
        return [_redact_op(op) for op in obj]
    if isinstance(obj, dict):
        if isinstance(obj.get("items"), list):
            obj["items"] = [_redact_object(i) for i in obj["items"]]
        if isinstance(obj.get("rows"), list):  # kind Table
            for row in obj["rows"]:
                if isinstance(row, dict) and "object" in row:
                    row["object"] = _redact_object(row["object"])
        for name in SECRET_FIELDS:
            if isinstance(obj.get(name), dict):
                obj[name] = {k: REDACTED for k in obj[name]}
            elif name in obj and obj[name] is not None:
                obj[name] = REDACTED
        if isinstance(obj.get("metadata"), dict):
            _redact_annotations(obj["metadata"].get("annotations"))
    return obj


def _redact_op(op: Any) -> Any:
    """One JSON patch operation on a Secret: the value goes when it can hold secret data."""
    if not isinstance(op, dict) or "value" not in op:
        return op
    path = str(op.get("path", ""))
    parts = path.split("/")  # "/data/password" -> ["", "data", "password"]
    top = parts[1] if len(parts) > 1 else ""
    value = op["value"]
    if top in SECRET_FIELDS:
        value = {k: REDACTED for k in value} if isinstance(value, dict) and len(parts) == 2 else REDACTED
    elif top == "":  # the whole object
        value = _redact_object(value)
    elif top == "metadata":
        if LAST_APPLIED_POINTER in path:
            value = REDACTED
        elif len(parts) == 2 and isinstance(value, dict):
            _redact_annotations(value.get("annotations"))
        elif len(parts) == 3 and parts[2] == "annotations":
            value = _redact_annotations(value)
    return {**op, "value": value}


def _redact_token(obj: Any, top: str, name: str) -> Any:
    """A copy of ``obj`` with ``obj[top][name]`` redacted (JSON patch ops on it too)."""
    if isinstance(obj, list):
        return [{**op, "value": REDACTED} if isinstance(op, dict) and "value" in op
                and str(op.get("path", "")).strip("/").split("/")[:1] in ([top], [""]) else op for op in obj]
    if isinstance(obj, dict) and isinstance(obj.get(top), dict) and name in obj[top]:
        return {**obj, top: {**obj[top], name: REDACTED}}
    return obj


def redact(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` without Secret values and credentials: a copy when something was redacted, else
    ``event`` itself (callers may test ``redact(e) is e``)."""
    resource = _ref(event).get("resource")
    if not isinstance(resource, str) or resource not in RESOURCES:  # most events: one look-up
        return event
    token = token_field(event)
    if not is_secret(event) and token is None:
        return event
    out = dict(event)
    for field in ("requestObject", "responseObject"):
        if field in out:
            out[field] = (_redact_object(copy.deepcopy(out[field])) if token is None
                          else _redact_token(out[field], *token))
    return out
