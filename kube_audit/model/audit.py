"""One audit event, parsed once: the typed view every stage reads, its dedup key, its JSON bytes. Pure.

``parse(record)`` turns a received record into an ``AuditEvent`` (the view, the redacted body, the JSON
bytes the store keeps and stdout prints) or a ``Rejected`` with a reason: a record that can never be
stored as an audit event (kept raw: its JSON still goes to stdout). It never raises.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from kube_audit.model.redact import REDACTED, is_secret, redact  # noqa: F401  (re-exported)

MUTATING_VERBS = frozenset({"create", "update", "patch", "delete"})
_ORJSON_OPTS = orjson.OPT_NON_STR_KEYS


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
    group: str = ""
    resource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.audit_id, self.stage


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that cannot be stored as an audit event; ``reason`` is a short metric label."""

    record: Any
    reason: str
    detail: str
    json: bytes  # the record as received, as JSON (no newline)
    unencodable: bool = False  # its JSON needed the slow path


class _Reject(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """A record that is an audit event: its view, redacted body and that body's JSON (no newline)."""

    record: dict[str, Any]  # as received
    view: EventView
    body: dict[str, Any]  # ``record`` without Secret values and credentials (``record`` itself if none)
    json: bytes
    ts: float | None  # stageTimestamp in epoch seconds, None when it does not parse
    unencodable: bool = False  # its JSON needed the slow path (e.g. lone surrogates)

    @property
    def key(self) -> tuple[str, str]:
        return self.view.key

    @property
    def redacted(self) -> bool:
        return self.body is not self.record


def dedup_key(event: dict[str, Any]) -> tuple[str, str]:
    """The idempotence key of an event: (auditID, stage)."""
    return str(event.get("auditID", "")), str(event.get("stage", ""))


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def view(event: dict[str, Any]) -> EventView:
    ref, user = _map(event.get("objectRef")), _map(event.get("user"))
    status = _map(event.get("responseStatus"))
    group, resource = str(ref.get("apiGroup") or ""), str(ref.get("resource") or "")
    namespace, name = str(ref.get("namespace") or ""), str(ref.get("name") or "")
    groups = user.get("groups")
    code = status.get("code")
    return EventView(
        audit_id=str(event.get("auditID", "")),
        stage=str(event.get("stage", "")),
        verb=str(event.get("verb", "")),
        level=str(event.get("level", "")),
        user=str(user.get("username", "")),
        groups=tuple(str(g) for g in groups) if isinstance(groups, list | tuple) else (),
        code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        stage_timestamp=str(event.get("stageTimestamp", "")),
        object=ObjectKey(group, resource, namespace, name) if resource and name else None,
        subresource=str(ref.get("subresource") or ""),
        api_version=str(ref.get("apiVersion") or ""),
        group=group, resource=resource, namespace=namespace, name=name,
    )


def is_dry_run(event: dict[str, Any]) -> bool:
    """A request made with ?dryRun=All: it changed nothing."""
    return "dryRun=" in str(event.get("requestURI", ""))


def parse_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError, OverflowError):
        return None


def _fallback(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if hasattr(value, "code") and isinstance(getattr(value, "data", None), bytes):  # msgpack.ExtType
        return {"extType": value.code, "data": base64.b64encode(value.data).decode("ascii")}
    raise TypeError(f"cannot encode {type(value).__name__}")


def dumps(obj: Any) -> tuple[bytes, bool]:
    """Compact JSON of ``obj`` (no newline) and whether the slow path was needed (e.g. lone surrogates)."""
    try:
        return orjson.dumps(obj, default=_fallback, option=_ORJSON_OPTS), False
    except TypeError:
        return json.dumps(obj, default=_fallback, separators=(",", ":")).encode("utf-8"), True


def _check(record: Any) -> None:
    if not isinstance(record, dict):
        raise _Reject("not_a_map", type(record).__name__)
    if not record.get("auditID") or not record.get("stage"):
        raise _Reject("not_an_audit_event", "no auditID or stage")


def parse(record: Any) -> AuditEvent | Rejected:
    """The typed view of one received record, or why it cannot be stored."""
    try:
        _check(record)
    except _Reject as exc:
        data, slow = dumps(record)
        return Rejected(record, exc.reason, exc.detail, data, slow)
    v = view(record)
    body = redact(record)
    data, slow = dumps(body)
    return AuditEvent(record, v, body, data, parse_time(v.stage_timestamp), slow)
