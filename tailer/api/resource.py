"""``auditevents`` as a Kubernetes resource: query parameters, field selectors, list items and Tables.

Filters, as query parameters (the pull-based audit KEP's) or as a field selector (kubectl's):

    user=alice              user.username=alice        group=dev (repeatable: any of them)
    verb=patch / verbs=create,update (any of them)     verb=patch
    resource=deployments[.apps]   apiGroup=apps        objectRef.resource= / objectRef.apiGroup=
    name=web                objectRef.name=web         namespace=shop (or the path), objectRef.namespace=
    code=422                responseStatus.code=422    level=, stage=, since=, until= (RFC 3339 or 2h)
    cluster=eu              cluster=eu                 source=apiserver-0   source=apiserver-0
                            (the forwarder's --cluster and --source-name; "" = none; unknown: nothing)

What the store indexes (one value per column) goes into its EventFilter; the rest (several verbs, groups,
``!=``, stage) is a predicate on the events read, so a page may hold fewer than ``limit`` items and still
carry a ``continue`` token, as Kubernetes allows. A parameter we do not know is a 400: a filter we would
silently ignore would answer "everything".
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
import orjson

from kube_audit.contract import API_VERSION, CLUSTER_ANNOTATION, FLUENT_ANNOTATION, SOURCE_ANNOTATION
from kube_audit.model.source import SourceId
from tailer.api.errors import ApiError, bad_request, parse_time, uint
from tailer.store import EventFilter
from tailer.store.rows import loads

# Parameters of every list/watch (Kubernetes' ListOptions; harmless ones are accepted and ignored).
LIST_PARAMS = {"limit", "continue", "watch", "resourceVersion", "resourceVersionMatch", "timeoutSeconds",
               "allowWatchBookmarks", "fieldSelector", "labelSelector", "includeObject", "pretty", "timeout",
               "sendInitialEvents"}
FILTER_PARAMS = {"namespace", "user", "group", "verb", "verbs", "resource", "apiGroup", "name", "since", "until",
                 "level", "code", "stage", "cluster", "source"}
VIEW_PARAMS = {"limit", "field", "start", "end", "value", "pretty", "timeout", "cluster", "source"}
STORE_ONLY = ("cluster", "source")  # not in the event: the store's filter alone can ask for them
# field selector -> filter parameter
FIELDS = {"metadata.namespace": "namespace", "objectRef.namespace": "namespace", "user.username": "user",
          "user.groups": "group", "verb": "verb", "objectRef.resource": "resource", "objectRef.apiGroup": "apiGroup",
          "objectRef.name": "name", "responseStatus.code": "code", "level": "level", "stage": "stage",
          "metadata.name": "auditID", "auditID": "auditID", "cluster": "cluster", "source": "source"}
TABLE_COLUMNS = [
    {"name": "Time", "type": "string", "format": "date-time", "description": "stageTimestamp", "priority": 0},
    {"name": "User", "type": "string", "format": "", "description": "user.username", "priority": 0},
    {"name": "Verb", "type": "string", "format": "", "description": "verb", "priority": 0},
    {"name": "Resource", "type": "string", "format": "", "description": "objectRef.resource[/subresource]",
     "priority": 0},
    {"name": "Name", "type": "string", "format": "", "description": "objectRef.name", "priority": 0},
    {"name": "Code", "type": "integer", "format": "", "description": "responseStatus.code", "priority": 0},
    {"name": "Cluster", "type": "string", "format": "", "description": "the forwarder's --cluster", "priority": 1},
    {"name": "Source", "type": "string", "format": "", "description": "the forwarder's --source-name",
     "priority": 1},
]


def check_params(query: Mapping[str, str], allowed: set[str]) -> None:
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise bad_request(f"unknown query parameter {', '.join(unknown)}; this endpoint takes "
                          f"{', '.join(sorted(allowed))}")


def _at(event: dict[str, Any], *path: str) -> Any:
    for key in path:
        event = event.get(key) if isinstance(event, dict) else None  # type: ignore[assignment]
    return event


def _str(value: Any) -> str:
    return "" if value is None else str(value)


# What each filter reads from an event (for the predicate and ``!=``).
READ: dict[str, Callable[[dict[str, Any]], Any]] = {
    "namespace": lambda e: _str(_at(e, "objectRef", "namespace")), "user": lambda e: _str(_at(e, "user", "username")),
    "verb": lambda e: _str(e.get("verb")), "resource": lambda e: _str(_at(e, "objectRef", "resource")),
    "apiGroup": lambda e: _str(_at(e, "objectRef", "apiGroup")), "name": lambda e: _str(_at(e, "objectRef", "name")),
    "code": lambda e: _str(_at(e, "responseStatus", "code")), "level": lambda e: _str(e.get("level")),
    "stage": lambda e: _str(e.get("stage")), "auditID": lambda e: _str(e.get("auditID")),
}


@dataclass
class Selection:
    """Equalities (one value each, or a set for verbs/groups) and inequalities, before the store split."""

    equal: dict[str, str] = field(default_factory=dict)
    verbs: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    not_equal: list[tuple[str, str]] = field(default_factory=list)

    def set(self, key: str, value: str) -> None:
        if key == "group":
            self.groups.add(value)
        elif key == "verb":
            self.verbs.add(value)
        elif self.equal.get(key, value) != value:
            raise bad_request(f"{key} is given twice with different values ({self.equal[key]!r}, {value!r})")
        else:
            self.equal[key] = value


def parse_field_selector(raw: str, into: Selection) -> None:
    for term in filter(None, (t.strip() for t in raw.split(","))):
        if "!=" in term:
            key, value, negate = *term.split("!=", 1), True
        elif "=" in term:
            key, value = term.replace("==", "=", 1).split("=", 1)
            negate = False
        else:
            raise bad_request(f"bad field selector term {term!r}: expected field=value or field!=value")
        key = key.strip()
        if key not in FIELDS:
            raise bad_request(f'field label not supported: "{key}"; supported: {", ".join(sorted(FIELDS))}')
        if negate and FIELDS[key] in STORE_ONLY:
            raise bad_request(f"field selector {key}!= is not supported: select one {key} with {key}=")
        if negate:
            into.not_equal.append((FIELDS[key], value.strip()))
        else:
            into.set(FIELDS[key], value.strip())


def selection(query: Mapping[str, str], getall: Callable[[str], list[str]], namespace: str | None) -> Selection:
    sel = Selection()
    if namespace is not None:
        sel.set("namespace", namespace)
    for key in sorted(FILTER_PARAMS & set(query)):
        for value in getall(key):
            if key == "verbs":
                for verb in filter(None, (v.strip() for v in value.split(","))):
                    sel.set("verb", verb)
            elif key == "resource" and "." in value:  # kubectl style: deployments.apps
                plural, _, group = value.partition(".")
                sel.set("resource", plural)
                sel.set("apiGroup", group)
            elif value != "" or key in ("apiGroup", "namespace", *STORE_ONLY):  # "" = core group / none
                sel.set(key, value)
    if query.get("fieldSelector"):
        parse_field_selector(query["fieldSelector"], sel)
    if query.get("labelSelector"):
        raise bad_request("audit events have no labels: use fieldSelector (e.g. user.username=alice)")
    return sel


@dataclass(frozen=True)
class Query:
    """A selection split into what the store filters and what is checked on each event read."""

    store: EventFilter
    keep: Callable[[dict[str, Any]], bool] | None  # None: the store filter says everything

    @property
    def namespace(self) -> str | None:
        return self.store.namespace


def plan(sel: Selection, now: float | None = None) -> Query:
    now = time.time() if now is None else now
    eq = dict(sel.equal)
    since, until = (parse_time(eq.pop(k), now) if k in eq else None for k in ("since", "until"))
    code = uint(eq.pop("code"), "code") if "code" in eq else None
    residue: dict[str, str] = {k: eq.pop(k) for k in ("stage", "auditID") if k in eq}
    verbs = set(sel.verbs)
    store = EventFilter(namespace=eq.get("namespace"), user=eq.get("user"), resource=eq.get("resource"),
                        group=eq.get("apiGroup"), name=eq.get("name"), level=eq.get("level"), code=code,
                        since=since, until=until, cluster=eq.get("cluster"), source=eq.get("source"))
    if len(verbs) == 1:
        store = replace(store, verb=verbs.pop())
    groups, not_equal = set(sel.groups), list(sel.not_equal)
    for key, value in not_equal:
        if key == "code":
            uint(value, "responseStatus.code")
    if not (verbs or groups or not_equal or residue):
        return Query(store, None)

    def keep(event: dict[str, Any]) -> bool:
        if verbs and READ["verb"](event) not in verbs:
            return False
        if groups:
            member = _at(event, "user", "groups")
            if not isinstance(member, list) or not groups & {str(g) for g in member}:
                return False
        if any(READ[k](event) != v for k, v in residue.items()):
            return False
        return all(READ[k](event) != v for k, v in not_equal)

    return Query(store, keep)


def item(seq: int, event: dict[str, Any], fluent: dict[str, Any] | None = None,
         source: SourceId | None = None) -> dict[str, Any]:
    """One list item: the audit.k8s.io/v1 Event as stored, as an AuditEvent of our group (kubectl maps every
    item's kind through discovery) with Kubernetes object metadata (``item_meta``)."""
    return {**event, "kind": "AuditEvent", "apiVersion": API_VERSION, "metadata": _meta_of(seq, event, fluent, source)}


def _meta_of(seq: int, event: dict[str, Any], fluent: dict[str, Any] | None, source: SourceId | None) -> dict[str, Any]:
    return item_meta(seq, event.get("auditID"), _at(event, "objectRef", "namespace"), event.get("stageTimestamp"),
                     fluent, source)


def item_meta(seq: int, audit_id: Any, namespace: Any, stamp: Any, fluent: dict[str, Any] | None = None,
              source: SourceId | None = None) -> dict[str, Any]:
    """An item's metadata, from the event's auditID, objectRef.namespace and stageTimestamp: ``fluent`` (the
    tag and metadata the event came with, when the store kept any) as the FLUENT_ANNOTATION, JSON text;
    ``source`` (where it came from) as the SOURCE_ANNOTATION and CLUSTER_ANNOTATION."""
    meta: dict[str, Any] = {"name": _str(audit_id), "resourceVersion": str(seq)}
    notes: dict[str, str] = {}
    if source is not None:
        notes = {SOURCE_ANNOTATION: source.name, CLUSTER_ANNOTATION: source.cluster}
    if fluent is not None:
        notes[FLUENT_ANNOTATION] = orjson.dumps(fluent).decode()
    if notes:
        meta["annotations"] = notes
    if namespace:
        meta["namespace"] = str(namespace)
    if stamp:
        meta["creationTimestamp"] = str(stamp)
    return meta


# ---- watch lines and list items from the stored JSON, without parsing the event ----
# A watched event is encoded once (the ring shares the line) but parsing its stored JSON and encoding it
# again was a fifth of the API process's CPU under ingest with 200 watchers (bench/watchers.py). An item
# is the event with kind and apiVersion replaced in place and metadata added at the end, so when the JSON
# starts with the v1 kind and apiVersion (as kube-apiserver writes every event) and has no metadata of its
# own, the item is those bytes spliced; msgspec reads only the few fields the metadata and a table row
# need and skips the rest (the request and response bodies) without building it. List pages and watchers
# reading the store take the same path (Store.sourced_json).

Stored = dict[str, Any] | bytes  # an event parsed, or its stored JSON (the watch ring's, Store.sourced_json's)
EVENT_HEAD = b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",'
ITEM_HEAD = b'{"kind":"AuditEvent","apiVersion":"' + API_VERSION.encode() + b'",'


class _User(msgspec.Struct):
    username: Any = None


class _Ref(msgspec.Struct):
    resource: Any = None
    subresource: Any = None
    name: Any = None
    namespace: Any = None


class _Status(msgspec.Struct):
    code: Any = None


class _Top(msgspec.Struct):
    """What a table row and an item's metadata read of an event (absent and null alike: None)."""

    auditID: Any = None
    verb: Any = None
    stageTimestamp: Any = None
    requestReceivedTimestamp: Any = None
    user: _User | None = None
    objectRef: _Ref | None = None
    responseStatus: _Status | None = None
    metadata: Any = msgspec.UNSET


class _NsRef(msgspec.Struct):
    namespace: Any = None


class _Item(msgspec.Struct):
    """What an item (a list item, a watch line) reads: its metadata's fields and the event's time. Fewer
    fields than ``_Top``, none of them a string it does not need: its decode takes ~30% less CPU than
    ``_Top``'s (the nested structs and strings ``_Top`` builds cost as much as skipping the bodies)."""

    auditID: Any = None
    stageTimestamp: Any = None
    requestReceivedTimestamp: Any = None
    objectRef: _NsRef | None = None
    metadata: Any = msgspec.UNSET


_TOP = msgspec.json.Decoder(_Top)
_ITEM = msgspec.json.Decoder(_Item)
Light = _Top | _Item


def _light(data: bytes, decoder: msgspec.json.Decoder[Any] = _TOP) -> Any:
    """What ``decoder``'s struct (``_Top``, ``_Item``) names of a stored event whose item can be spliced,
    else None."""
    if not data.startswith(EVENT_HEAD):
        return None
    try:
        top = decoder.decode(data)
    except msgspec.DecodeError:  # (not one JSON object, a field of another shape, nested deeper than it reads)
        return None
    return top if top.metadata is msgspec.UNSET else None


def _spliced(seq: int, data: bytes, top: Light, source: SourceId | None,
             fluent: dict[str, Any] | None = None) -> bytes:
    meta = item_meta(seq, top.auditID, top.objectRef.namespace if top.objectRef else None, top.stageTimestamp,
                     fluent, source)
    # (a view, not a slice: the event's bytes are copied once, into the item)
    return b"".join((ITEM_HEAD, memoryview(data)[len(EVENT_HEAD):-1], b',"metadata":', orjson.dumps(meta), b"}"))


def _as_event(top: _Top) -> dict[str, Any]:
    """The fields of the event ``row`` reads, as the parsed event has them."""
    return {"auditID": top.auditID, "verb": top.verb, "stageTimestamp": top.stageTimestamp,
            "requestReceivedTimestamp": top.requestReceivedTimestamp,
            "user": msgspec.structs.asdict(top.user) if top.user else None,
            "objectRef": msgspec.structs.asdict(top.objectRef) if top.objectRef else None,
            "responseStatus": msgspec.structs.asdict(top.responseStatus) if top.responseStatus else None}


def item_json(seq: int, stored: Stored, source: SourceId | None = None) -> bytes:
    """``dump(item(seq, event, source=source))``; from stored JSON without parsing it where it can be."""
    return _item_json(seq, stored, source, None)[0]


def _item_json(seq: int, stored: Stored, source: SourceId | None, fluent: dict[str, Any] | None
               ) -> tuple[bytes, _Item | dict[str, Any]]:
    """The item's JSON, and what it was made from: the few fields ``_light`` read, or the parsed event."""
    if isinstance(stored, bytes) and (top := _light(stored, _ITEM)) is not None:
        return _spliced(seq, stored, top, source, fluent), top
    event = loads(stored) if isinstance(stored, bytes) else stored
    return dump(item(seq, event, fluent, source)), event


def table_json(version: str, seq: int, stored: Stored, include: str, source: SourceId | None = None) -> bytes:
    """``dump(table(version, [row(seq, event, include, source)], {}))``, the same way as ``item_json``."""
    return _table_head(version) + dump(table_rows([(seq, stored, source)], include)[0][0]) + b"]}"


def list_items(rows: Sequence[tuple[int, Stored, SourceId | None]], fluent: Mapping[int, dict[str, Any]]
               ) -> tuple[list[bytes], list[dict[str, Any]]]:
    """The JSON of each row's ``item`` (``fluent``: by seq), and what ``event_time`` reads of each event (for
    the gap warnings); stored JSON is spliced where it can be, as in ``item_json``."""
    items, times = [], []
    for seq, stored, source in rows:
        data, made_of = _item_json(seq, stored, source, fluent.get(seq))
        items.append(data)
        times.append(made_of if isinstance(made_of, dict) else
                     {"stageTimestamp": made_of.stageTimestamp, "requestReceivedTimestamp": made_of.requestReceivedTimestamp})
    return items, times


def table_rows(rows: Sequence[tuple[int, Stored, SourceId | None]], include: str
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each row's table ``row`` and what ``event_time`` reads of its event, as ``list_items``."""
    out, times = [], []
    for seq, stored, source in rows:
        whole: bytes | None = None
        if isinstance(stored, bytes) and (top := _light(stored)) is not None:
            whole = _spliced(seq, stored, top, source) if include == "Object" else None
            event = _as_event(top)
        else:
            event = loads(stored) if isinstance(stored, bytes) else stored
        out.append(row(seq, event, include, source, whole))
        times.append(event)
    return out, times


@functools.cache
def _table_head(version: str) -> bytes:
    """A one-row Table's JSON up to its row (the column definitions: the same for every line)."""
    head = table(version, [], {})
    del head["rows"]
    return orjson.dumps(head)[:-1] + b',"rows":['


def event_list(items: Sequence[Any], meta: dict[str, Any]) -> bytes:
    return list_body({"kind": "AuditEventList", "apiVersion": API_VERSION, "metadata": meta}, "items", items)


# ---- server-side printing (kubectl's Accept: application/json;as=Table;g=meta.k8s.io;v=v1) ----

def table_version(accept: str) -> str | None:
    """The meta.k8s.io version of the Table the client asks for first, None when it wants objects."""
    for media in accept.split(","):
        params = dict(p.strip().partition("=")[::2] for p in media.split(";")[1:])
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
            return params["v"]
    return None


def include_object(query: Mapping[str, str]) -> str:
    mode = query.get("includeObject") or "Metadata"
    if mode not in ("None", "Metadata", "Object"):
        raise bad_request(f"includeObject must be None, Metadata or Object, not {mode[:20]!r}")
    return mode


def row(seq: int, event: dict[str, Any], include: str, source: SourceId | None = None,
        whole: bytes | None = None) -> dict[str, Any]:
    """A table row; ``whole``: the item's JSON when it was made already (``table_json``)."""
    found = event.get("objectRef")
    ref: dict[str, Any] = found if isinstance(found, dict) else {}
    resource = _str(ref.get("resource")) + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    code = _at(event, "responseStatus", "code")
    out: dict[str, Any] = {"cells": [_str(event.get("stageTimestamp")), _str(_at(event, "user", "username")),
                                     _str(event.get("verb")), resource, _str(ref.get("name")),
                                     code if isinstance(code, int) else None,
                                     source.cluster if source else "", source.name if source else ""]}
    if include == "Object":
        out["object"] = orjson.Fragment(whole) if whole is not None else item(seq, event, source=source)
    elif include == "Metadata":
        out["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                         "metadata": _meta_of(seq, event, None, source)}
    return out


def table(version: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Table", "apiVersion": f"meta.k8s.io/{version}", "metadata": meta,
            "columnDefinitions": TABLE_COLUMNS, "rows": rows}


def table_body(version: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> bytes:
    head = table(version, [], meta)
    del head["rows"]
    return list_body(head, "rows", rows)


def check_query_values(query: Mapping[str, str]) -> None:
    """Values Kubernetes clients send that we must not misread."""
    if query.get("resourceVersionMatch") not in (None, "", "NotOlderThan", "Exact"):
        raise bad_request("resourceVersionMatch must be NotOlderThan or Exact")
    if query.get("sendInitialEvents", "").lower() == "true":
        raise ApiError(400, "BadRequest", "sendInitialEvents is not supported: list, then watch from the list's "
                       "resourceVersion")


# ---- encoding: one odd row never breaks a page or a watch ----

def dump(obj: Any) -> bytes:
    """JSON of one item. orjson refuses nesting deeper than 255 (an event stored before ingest bounded
    depth); the standard library takes it; deeper still, the item says so instead of failing the page."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        pass
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8", "replace")
    except (RecursionError, ValueError, TypeError):
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        return orjson.dumps({"kind": "AuditEvent", "apiVersion": API_VERSION, "metadata": meta or {},
                             "auditID": obj.get("auditID") if isinstance(obj, dict) else None,
                             "unencodable": "the stored event is nested too deeply to encode"})


def list_body(head: dict[str, Any], key: str, entries: Sequence[Any]) -> bytes:
    """``head`` plus ``key: entries``, each entry encoded on its own (or already: bytes)."""
    return (orjson.dumps(head)[:-1] + b',"' + key.encode() + b'":['
            + b",".join(e if isinstance(e, bytes) else dump(e) for e in entries) + b"]}")


def watch_line(kind: str, obj: bytes) -> bytes:
    """A watch event's line; ``obj``: the object's JSON."""
    return b"".join((b'{"type":"', kind.encode(), b'","object":', obj, b"}\n"))  # (obj copied once)
