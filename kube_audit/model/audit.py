"""One audit event, parsed once: the typed view every stage reads, its dedup key, its JSON bytes. Pure.

``parse(record)`` turns a received record into an ``AuditEvent`` (the view, the redacted body, the JSON
bytes the store keeps and stdout prints) or a ``Rejected`` with a reason: a record that can never be
stored as an audit event (kept raw: its JSON still goes to stdout). It never raises.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import msgspec
import orjson

from kube_audit.model.redact import REDACTED, is_secret, redact  # noqa: F401  (re-exported)

MUTATING_VERBS = frozenset({"create", "update", "patch", "delete"})
_ORJSON_OPTS = orjson.OPT_NON_STR_KEYS
MAX_DEPTH = 100  # nested maps and lists; Kubernetes objects stay far below, JSON libraries stop near 255
MAX_CODE = 2**31 - 1  # responseStatus.code is an int32 in Kubernetes (and an INTEGER column)
# Longest value of the fields the store indexes, in UTF-8 bytes: Kubernetes names are at most 253
# characters; the bound keeps a composite index entry under PostgreSQL's 2,704-byte B-tree limit.
MAX_FIELD = {"auditID": 253, "stage": 64, "verb": 64, "level": 64, "username": 1024, "apiGroup": 253,
             "resource": 253, "namespace": 253, "name": 1024, "subresource": 253}
REJECT_REASONS = ("not_a_map", "not_an_audit_event", "bad_shape", "bad_code", "too_deep", "non_string_key",
                  "invalid_unicode", "non_finite_number", "nul_in_field", "field_too_long", "store_refused")


@dataclass(frozen=True, slots=True)
class ObjectKey:
    """An object as the audit log names it. ``namespace`` is "" for cluster-scoped objects."""

    group: str
    resource: str
    namespace: str
    name: str


_SET_GROUP, _SET_RESOURCE, _SET_NAMESPACE, _SET_NAME = (
    ObjectKey.__dict__[f].__set__ for f in ("group", "resource", "namespace", "name"))


def object_key(group: str, resource: str, namespace: str, name: str) -> ObjectKey:
    """``ObjectKey(...)`` for the ack path (one per event): its slots set directly, not through the frozen
    dataclass's __init__ (object.__setattr__ per field), in half the time."""
    key = object.__new__(ObjectKey)
    _SET_GROUP(key, group)
    _SET_RESOURCE(key, resource)
    _SET_NAMESPACE(key, namespace)
    _SET_NAME(key, name)
    return key


@dataclass(slots=True)  # not frozen: built for every record on the ack path, and frozen init is slow
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

    record: Any  # as received
    reason: str
    detail: str
    json: bytes  # the record as JSON (no newline), Secret values and credentials redacted when it could be
    unencodable: bool = False  # its JSON needed a slow path
    redacted: bool = False  # ``json`` differs from the record as received


def reject(record: Any, reason: str, detail: str = "") -> Rejected:
    """A Rejected for ``record``; redaction is tried (a record of an odd shape may defeat it)."""
    body = record
    if isinstance(record, dict):
        try:
            body = redact(record)
        except Exception:  # e.g. nesting too deep to copy: kept as it came
            body = record
    data, slow = dumps(body)
    return Rejected(record, reason, detail, data, slow, body is not record)


class _Reject(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


@dataclass(slots=True)  # not frozen either (never changed: ``dataclasses.replace`` makes a new one): 4x faster
class AuditEvent:
    """A record that is an audit event: its view, redacted body and that body's JSON (no newline)."""

    record: dict[str, Any]  # as received
    view: EventView
    body: dict[str, Any]  # ``record`` without Secret values and credentials (``record`` itself if none)
    json: bytes
    ts: float | None  # stageTimestamp in epoch seconds, None when it does not parse
    unencodable: bool = False  # its JSON needed the slow path (e.g. lone surrogates)
    meta: bytes | None = None  # JSON {"tag", "metadata"} that came beside it (Fluent forward), kept by the store

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
        object=object_key(group, resource, namespace, name) if resource and name else None,
        subresource=str(ref.get("subresource") or ""),
        api_version=str(ref.get("apiVersion") or ""),
        group=group, resource=resource, namespace=namespace, name=name,
    )


def is_dry_run(event: dict[str, Any]) -> bool:
    """A request made with ?dryRun=All: it changed nothing."""
    return "dryRun=" in str(event.get("requestURI", ""))


_SECONDS: dict[str, int] = {}  # "2026-11-20T09:00:00" -> its epoch second, for the seconds events share


def parse_time(text: str) -> float | None:
    """``text`` (RFC 3339, as ``datetime.fromisoformat`` reads it) in epoch seconds, None if it is not a time.

    Kubernetes writes microseconds and Z (27 characters); those take a look-up of their second and the
    same arithmetic as ``datetime.timestamp`` (so the same float), not a parse of their own."""
    if type(text) is str and len(text) == 27 and text[19] == "." and text[26] == "Z":
        micros = text[20:26]
        if micros.isascii() and micros.isdigit():
            second = _SECONDS.get(text[:19])
            if second is None:
                whole = _parse_time(text[:19] + "+00:00")
                if whole is None:
                    return None
                if len(_SECONDS) >= 4096:
                    _SECONDS.clear()
                second = _SECONDS[text[:19]] = int(whole)
            return (second * 1_000_000 + int(micros)) / 1_000_000
    return _parse_time(text)


def _parse_time(text: str) -> float | None:
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


def _plain(obj: Any, depth: int = 0) -> Any:
    """What JSON can hold, for a record that neither encoder takes (non-string keys such as bytes or
    tuples, nesting past the encoders' limits): keys become strings, deep values a marker."""
    if depth > 2 * MAX_DEPTH:
        return "<nested too deep>"
    if isinstance(obj, dict):
        return {(k if isinstance(k, str) else str(_fallback_or_repr(k))): _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v, depth + 1) for v in obj]
    if isinstance(obj, str):
        return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if obj is None or isinstance(obj, bool | int | float):
        return obj
    return _fallback_or_repr(obj)


def _fallback_or_repr(value: Any) -> Any:
    try:
        return _fallback(value)
    except TypeError:
        return repr(value)


def dumps(obj: Any) -> tuple[bytes, bool]:
    """Compact JSON of ``obj`` (no newline) and whether a slow path was needed (lone surrogates, odd
    keys, deep nesting). Never raises."""
    try:  # without OPT_NON_STR_KEYS first: that option makes every dump ~1.5x slower
        return orjson.dumps(obj, default=_fallback), False
    except TypeError:
        pass
    try:
        return orjson.dumps(obj, default=_fallback, option=_ORJSON_OPTS), False
    except TypeError:
        pass
    try:
        return json.dumps(obj, default=_fallback, separators=(",", ":"), allow_nan=False).encode("utf-8"), True
    except (TypeError, ValueError, RecursionError):
        return orjson.dumps(_plain(obj), option=_ORJSON_OPTS), True


def _walk(record: dict[str, Any]) -> None:
    """Depth, map keys, strings and numbers of the whole record; iterative (no recursion limit)."""
    stack: list[tuple[Any, int]] = [(record, 1)]
    while stack:
        value, depth = stack.pop()
        kind = type(value)
        if kind is str:
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise _Reject("invalid_unicode", "a string with a lone surrogate (invalid UTF-8)") from None
        elif kind is dict:
            if depth > MAX_DEPTH:
                raise _Reject("too_deep", f"nested deeper than {MAX_DEPTH} levels")
            for key, item in value.items():
                if type(key) is not str:
                    raise _Reject("non_string_key", f"a map key of type {type(key).__name__}")
                stack.append((key, depth))
                stack.append((item, depth + 1))
        elif kind is list or kind is tuple:
            if depth > MAX_DEPTH:
                raise _Reject("too_deep", f"nested deeper than {MAX_DEPTH} levels")
            stack.extend((item, depth + 1) for item in value)
        elif kind is float and not math.isfinite(value):
            raise _Reject("non_finite_number", f"a number {value}")


def _containers(record: dict[str, Any]) -> None:
    """Depth and numbers only: what a strict orjson encoding does not check."""
    stack: list[tuple[Any, int]] = [(record, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _Reject("too_deep", f"nested deeper than {MAX_DEPTH} levels")
        for item in value.values() if type(value) is dict else value:
            kind = type(item)
            if kind is dict or kind is list:
                stack.append((item, depth + 1))
            elif kind is float and not math.isfinite(item):
                raise _Reject("non_finite_number", f"a number {item}")


def _containers_at_most(data: bytes) -> int:
    """How many ``{`` and ``[`` the JSON ``data`` holds (in strings too): a bound on its depth. Counted by
    what ``replace`` removes: it finds each with memchr, where ``count`` steps through every byte (0.9 against
    1.6 µs for a 1.5 KB event)."""
    return 2 * len(data) - len(data.replace(b"{", b"")) - len(data.replace(b"[", b""))


def _strict_json(record: dict[str, Any]) -> bytes | None:
    """The record's JSON when orjson takes it strictly (string keys, valid UTF-8, JSON types, depth under
    255), which leaves only depth and non-finite numbers to check; else None (the full walk decides)."""
    try:
        return orjson.dumps(record)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return None


# (name, characters that always fit, bytes allowed) of the string fields the store and the views read
def _limits(*names: str) -> tuple[tuple[str, int, int], ...]:
    return tuple((n, MAX_FIELD.get(n, 1 << 62) // 4, MAX_FIELD.get(n, 1 << 62)) for n in names)


_TOP = _limits("auditID", "stage", "verb", "level", "stageTimestamp", "requestURI")
_USER = _limits("username")
_REF = _limits("apiGroup", "apiVersion", "resource", "namespace", "name", "subresource")


def _strings(holder: Any, fields: tuple[tuple[str, int, int], ...], where: str) -> list[Any]:
    """The values of ``fields`` in ``holder`` (None when absent or null, all of them when ``holder`` is
    None): each a string with no NUL, bounded; ``holder`` a map."""
    if holder is None:
        return [None] * len(fields)
    if type(holder) is not dict:
        raise _Reject("bad_shape", f"{where} is a {type(holder).__name__}, not a map")
    out = []
    for name, short, limit in fields:
        value = holder.get(name)
        if value is not None:
            if type(value) is not str:
                raise _Reject("bad_shape", f"{where}{'.' if where else ''}{name} is a {type(value).__name__}, "
                                           "not a string")
            if "\x00" in value:
                raise _Reject("nul_in_field", f"{where}{'.' if where else ''}{name} holds a NUL character")
            if len(value) > short and len(value.encode("utf-8")) > limit:
                raise _Reject("field_too_long", f"{where}{'.' if where else ''}{name} is longer than {limit} bytes")
        out.append(value)
    return out


def _short(name: str, min_length: int = 0) -> Any:
    """A string field of ``_Fields`` that msgspec takes when it surely fits (``_limits``' characters)."""
    limit = MAX_FIELD.get(name)
    if limit is None and not min_length:
        return str
    return Annotated[str, msgspec.Meta(min_length=min_length, max_length=None if limit is None else limit // 4)]


# The fields the view reads, as msgspec checks them in C: what ``_checked_view`` accepts with no question
# (each a string that surely fits, verb, level, stageTimestamp and user.username present, a code in range),
# read in one call instead of the Python loop of ``_strings``: 74k -> 62k instructions per realistic event
# for ``parse`` (callgrind). Anything msgspec refuses goes the checking way, which says why (or accepts a
# field it could not be sure of: a long name within its byte limit, a null verb).
class _User(msgspec.Struct):
    username: _short("username")  # type: ignore[valid-type]
    groups: list[str] | None = None


class _Ref(msgspec.Struct):
    apiGroup: _short("apiGroup") | None = None  # type: ignore[valid-type]
    apiVersion: str | None = None
    resource: _short("resource") | None = None  # type: ignore[valid-type]
    namespace: _short("namespace") | None = None  # type: ignore[valid-type]
    name: _short("name") | None = None  # type: ignore[valid-type]
    subresource: _short("subresource") | None = None  # type: ignore[valid-type]


class _Status(msgspec.Struct):
    code: Annotated[int, msgspec.Meta(ge=0, le=MAX_CODE)] | None = None


class _Fields(msgspec.Struct):
    auditID: _short("auditID", min_length=1)  # type: ignore[valid-type]
    stage: _short("stage", min_length=1)  # type: ignore[valid-type]
    verb: _short("verb")  # type: ignore[valid-type]
    level: _short("level")  # type: ignore[valid-type]
    stageTimestamp: str
    user: _User
    requestURI: str | None = None
    objectRef: _Ref | None = None
    responseStatus: _Status | None = None


def _quick_view(record: dict[str, Any]) -> EventView | None:
    """The view of ``record`` when msgspec finds every field it reads fine (None: let the checks decide).
    Only for a record a decoder built from bytes (``exact``): msgspec also takes a tuple for a list and
    subclasses of dict and str, which the checks refuse as ``bad_shape``."""
    try:
        f = msgspec.convert(record, _Fields)
    except msgspec.ValidationError:
        return None
    user, ref, status = f.user, f.objectRef, f.responseStatus
    if ref is None:
        group = resource = namespace = name = subresource = api_version = ""
    else:
        group, resource, namespace, name = ref.apiGroup or "", ref.resource or "", ref.namespace or "", ref.name or ""
        subresource, api_version = ref.subresource or "", ref.apiVersion or ""
    # a NUL in any of them: one search of them joined (one per field took longer than msgspec's checks)
    if "\x00" in "".join((f.auditID, f.stage, f.verb, f.level, f.stageTimestamp, f.requestURI or "", user.username,
                          group, api_version, resource, namespace, name, subresource)):
        return None
    groups = user.groups
    return EventView(f.auditID, f.stage, f.verb, f.level, user.username, tuple(groups) if groups else (),
                     None if status is None else status.code, f.stageTimestamp,
                     object_key(group, resource, namespace, name) if resource and name else None,
                     subresource, api_version, group, resource, namespace, name)


def _checked_view(record: Any, strict: bytes | None, finite: bool = False, exact: bool = False) -> EventView:
    """The view of a record that can be stored as an audit event, read in the same pass that checks the
    fields it holds; raises _Reject with the first reason it cannot (in a fixed order)."""
    if not isinstance(record, dict):
        raise _Reject("not_a_map", type(record).__name__)
    if strict is None:
        _walk(record)
    elif _containers_at_most(strict) > MAX_DEPTH or (not finite and b"null" in strict):  # NaN, inf encode as null
        _containers(record)
    if exact and strict is not None:
        quick = _quick_view(record)
        if quick is not None:
            return quick
    if not record.get("auditID") or not record.get("stage"):
        raise _Reject("not_an_audit_event", "no auditID or stage")
    audit_id, stage, verb, level, stamp, _ = _strings(record, _TOP, "")
    user = record.get("user")
    (username,) = _strings(user, _USER, "user")
    ref = record.get("objectRef")
    group, api_version, resource, namespace, name, subresource = _strings(ref, _REF, "objectRef")
    groups = user.get("groups") if user else None
    if groups is not None and not (type(groups) is list and all(type(g) is str for g in groups)):
        raise _Reject("bad_shape", "user.groups is not a list of strings")
    status = record.get("responseStatus")
    if status is not None and type(status) is not dict:
        raise _Reject("bad_shape", f"responseStatus is a {type(status).__name__}, not a map")
    code = status.get("code") if status else None
    if code is not None and (type(code) is not int or not 0 <= code <= MAX_CODE):
        raise _Reject("bad_code", f"responseStatus.code {str(code)[:24]} is not an HTTP status")
    if verb is None or level is None or stamp is None or username is None:
        return view(record)  # (view's reading of a null field, kept: rare)
    group, resource, namespace, name = group or "", resource or "", namespace or "", name or ""
    return EventView(audit_id, stage, verb, level, username, tuple(groups) if groups else (), code, stamp,
                     object_key(group, resource, namespace, name) if resource and name else None,
                     subresource or "", api_version or "", group, resource, namespace, name)


def parse(record: Any, finite: bool = False, exact: bool = False) -> AuditEvent | Rejected:
    """The typed view of one received record, or why it cannot be stored. ``finite``: its decoder found no
    NaN or infinite number in the bytes it was built from (``Records.finite``), so none is looked for (a
    NaN encodes as the ``null`` that one realistic event in twenty holds, and each such event is walked:
    with the search for ``null``, 7.8k instructions per event on average, callgrind). ``exact``: a decoder
    built it from bytes (``Records.exact``, from ``EventBatch.exact``), so its maps, arrays and strings are
    exactly dict, list and str (no tuple, no subclass), and msgspec may check its fields (``_quick_view``).
    Same result either way."""
    strict = _strict_json(record) if isinstance(record, dict) else None
    try:
        v = _checked_view(record, strict, finite, exact)
    except _Reject as exc:
        return reject(record, exc.reason, exc.detail)
    body = redact(record)
    data, slow = (strict, False) if body is record and strict is not None else dumps(body)
    return AuditEvent(record, v, body, data, parse_time(v.stage_timestamp), slow)
