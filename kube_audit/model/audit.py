"""A view of one audit event: which object, who, what verb; dedup key; redaction. Pure, no I/O."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

MUTATING_VERBS = frozenset({"create", "update", "patch", "delete"})
REDACTED = "<redacted>"
SECRET_FIELDS = ("data", "stringData")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
LAST_APPLIED_POINTER = "kubectl.kubernetes.io~1last-applied-configuration"


@dataclass(frozen=True, slots=True)
class ObjectKey:
    """An object as the audit log names it. ``namespace`` is "" for cluster-scoped objects."""

    group: str
    resource: str
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class EventView:
    audit_id: str
    stage: str
    verb: str
    level: str
    user: str
    groups: tuple[str, ...]
    code: int | None
    stage_timestamp: str
    object: ObjectKey | None  # None when the event has no objectRef or no name
    subresource: str
    api_version: str


def dedup_key(event: dict[str, Any]) -> tuple[str, str]:
    """The idempotence key of an event: (auditID, stage)."""
    return str(event.get("auditID", "")), str(event.get("stage", ""))


def view(event: dict[str, Any]) -> EventView:
    ref = event.get("objectRef") or {}
    user = event.get("user") or {}
    status = event.get("responseStatus") or {}
    key = None
    if ref.get("resource") and ref.get("name"):
        key = ObjectKey(
            group=str(ref.get("apiGroup") or ""),
            resource=str(ref["resource"]),
            namespace=str(ref.get("namespace") or ""),
            name=str(ref["name"]),
        )
    code = status.get("code")
    return EventView(
        audit_id=str(event.get("auditID", "")),
        stage=str(event.get("stage", "")),
        verb=str(event.get("verb", "")),
        level=str(event.get("level", "")),
        user=str(user.get("username", "")),
        groups=tuple(str(g) for g in user.get("groups") or ()),
        code=int(code) if isinstance(code, int) else None,
        stage_timestamp=str(event.get("stageTimestamp", "")),
        object=key,
        subresource=str(ref.get("subresource") or ""),
        api_version=str(ref.get("apiVersion") or ""),
    )


def is_dry_run(event: dict[str, Any]) -> bool:
    """A request made with ?dryRun=All: it changed nothing."""
    return "dryRun=" in str(event.get("requestURI", ""))


def is_secret(event: dict[str, Any]) -> bool:
    ref = event.get("objectRef") or {}
    return ref.get("resource") == "secrets" and not ref.get("apiGroup")


def _redact_annotations(annotations: Any) -> Any:
    # kubectl apply keeps the whole applied object, data included, in this annotation
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
        if isinstance(obj.get("rows"), list):  # kind Table, as kubectl get asks for it
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
    parts = str(op.get("path", "")).split("/")  # "/data/password" -> ["", "data", "password"]
    top = parts[1] if len(parts) > 1 else ""
    value = op["value"]
    if top in SECRET_FIELDS:
        value = {k: REDACTED for k in value} if isinstance(value, dict) and len(parts) == 2 else REDACTED
    elif top == "":  # the whole object
        value = _redact_object(value)
    elif top == "metadata":
        if LAST_APPLIED_POINTER in op.get("path", ""):
            value = REDACTED
        elif len(parts) == 2 and isinstance(value, dict):
            _redact_annotations(value.get("annotations"))
        elif len(parts) == 3 and parts[2] == "annotations":
            value = _redact_annotations(value)
    return {**op, "value": value}


def redact(event: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``event`` without Secret values (keys stay, values become "<redacted>")."""
    if not is_secret(event):
        return event
    out = dict(event)
    for field in ("requestObject", "responseObject"):
        if field in out:
            out[field] = _redact_object(copy.deepcopy(out[field]))
    return out
