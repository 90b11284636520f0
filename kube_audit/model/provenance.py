"""Provenance of one object from its audit events: versions, field history, diff, bisect. Pure, no I/O.

A version is the object's state after a successful (2xx, stage ResponseComplete) create, update, patch
or delete on the object itself or its ``status`` subresource. The state comes from, in order:
the response object (level RequestResponse), the request body of a create or update, or the patch in
the request body applied to the previous known state. The content type of a patch is not in the audit
event, so it is inferred: a JSON list is a JSON patch (RFC 6902), a map is a merge patch (RFC 7386).
A strategic merge patch is replayed as a merge patch; where that may differ from what the apiserver did,
the version is marked ``complete: false`` with a reason instead of guessing:
  - a ``$patch``, ``$retainKeys``, ``$setElementOrder/..`` or ``$deleteFromPrimitiveList/..`` directive;
  - on a built-in resource, a patch that replaces a non-empty list of maps (a strategic merge patch
    would have merged it by key, e.g. containers by name);
  - a server-side apply body (a map with apiVersion and kind): its result depends on field ownership.
``metadata.managedFields`` is dropped from states (noise). Dry-run requests make no version.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, TypeGuard

from kube_audit.model.audit import MUTATING_VERBS, is_dry_run

VERSION_SUBRESOURCES = ("", "status")
_MISSING = object()


class PatchError(ValueError):
    """A patch that cannot be applied to the known state."""


# ---- which events make versions -------------------------------------------------------------------

def makes_version(event: dict[str, Any]) -> bool:
    ref = event.get("objectRef") or {}
    code = (event.get("responseStatus") or {}).get("code")
    return (
        event.get("stage") == "ResponseComplete"
        and event.get("verb") in MUTATING_VERBS
        and isinstance(code, int) and 200 <= code < 300
        and (ref.get("subresource") or "") in VERSION_SUBRESOURCES
        and not is_dry_run(event)
    )


def is_builtin_group(group: str) -> bool:
    """Core and *.k8s.io groups are built-in: their patches may be strategic merge patches."""
    return "." not in group or group.endswith(".k8s.io")


def _is_object(value: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and bool(value.get("kind")) and value.get("kind") != "Status"


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return out


# ---- patches -------------------------------------------------------------------------------------

def _directive(patch: Any) -> str | None:
    if isinstance(patch, dict):
        for key, value in patch.items():
            if isinstance(key, str) and key.startswith("$"):
                return key
            found = _directive(value)
            if found:
                return found
    elif isinstance(patch, list):
        for item in patch:
            found = _directive(item)
            if found:
                return found
    return None


def merge_patch(target: Any, patch: Any, path: str = "", lists: list[str] | None = None) -> Any:
    """RFC 7386; ``lists`` collects paths where a non-empty list of maps was replaced by a different one."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        sub = f"{path}.{key}" if path else str(key)
        if value is None:
            out.pop(key, None)
            continue
        old = out.get(key)
        if (lists is not None and isinstance(value, list) and isinstance(old, list) and old and old != value
                and any(isinstance(i, dict) for i in old + value)):
            lists.append(sub)
        out[key] = merge_patch(old, value, sub, lists)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, adding: bool) -> int:
    if token == "-" and adding:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"bad list index {token!r}")
    i = int(token)
    if i > len(container) or (i == len(container) and not adding):
        raise PatchError(f"list index {i} out of range")
    return i


def _get(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        if isinstance(doc, dict):
            if token not in doc:
                raise PatchError(f"path /{'/'.join(tokens)} does not exist")
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(doc, token, False)]
        else:
            raise PatchError(f"path /{'/'.join(tokens)} does not exist")
    return doc


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _get(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, True), value)
    else:
        raise PatchError(f"cannot add below a {type(parent).__name__}")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _get(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path /{'/'.join(tokens)} does not exist")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, False))
    raise PatchError(f"path /{'/'.join(tokens)} does not exist")


def json_patch(doc: Any, ops: Sequence[Any]) -> Any:
    """RFC 6902 on a copy of ``doc``."""
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"not a JSON patch operation: {op!r}")
        kind, tokens = op["op"], _pointer(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"{kind} without a value")
        if kind == "add":
            doc = _add(doc, tokens, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, tokens)
        elif kind == "replace":
            _get(doc, tokens)  # must exist
            if tokens:
                _remove(doc, tokens)
            doc = _add(doc, tokens, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = _remove(doc, source) if kind == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, tokens, value)
        elif kind == "test":
            if _get(doc, tokens) != op["value"]:
                raise PatchError(f"test failed at {op['path']}")
        else:
            raise PatchError(f"unknown operation {kind!r}")
    return doc


def patch_type(patch: Any) -> str:
    """The inferred content type: json (RFC 6902), merge (RFC 7386), strategic, apply (server-side)."""
    if isinstance(patch, list):
        return "json"
    if isinstance(patch, dict):
        if patch.get("apiVersion") and patch.get("kind"):
            return "apply"
        return "strategic" if _directive(patch) else "merge"
    return "unknown"


def apply_patch(state: dict[str, Any], patch: Any, builtin: bool) -> tuple[dict[str, Any] | None, str, str]:
    """(new state or None, patch type, reason when None)."""
    if isinstance(patch, list):
        try:
            result = json_patch(state, patch)
        except PatchError as exc:
            return None, "json", f"JSON patch does not apply to the last known state: {exc}"
        if not isinstance(result, dict):
            return None, "json", "JSON patch replaced the object with a non-object"
        return result, "json", ""
    if not isinstance(patch, dict):
        return None, "unknown", f"patch body is a {type(patch).__name__}, neither a JSON patch nor a map"
    if patch.get("apiVersion") and patch.get("kind"):
        return None, "apply", "server-side apply: the result depends on field ownership"
    directive = _directive(patch)
    if directive:
        return None, "strategic", f"strategic merge directive {directive!r} cannot be replayed"
    lists: list[str] = []
    result = merge_patch(state, patch, "", lists)
    if builtin and lists:
        return None, "merge", (f"patch replaces the list {lists[0]}; a strategic merge patch would have "
                               "merged it by key")
    return result, "merge", ""


# ---- versions ------------------------------------------------------------------------------------

def versions(events: Iterable[tuple[int, dict[str, Any]]], builtin: bool = False,
             first: int = 1) -> list[dict[str, Any]]:
    """The versions of one object from its events (store sequence, event), oldest first, numbered from
    ``first`` (more than 1 when older events were left out)."""
    out: list[dict[str, Any]] = []
    state: dict[str, Any] | None = None
    known = False  # whether ``state`` is the object's state (None = it does not exist)
    for seq, event in events:
        if not makes_version(event):
            continue
        verb = str(event.get("verb"))
        req, resp = event.get("requestObject"), event.get("responseObject")
        user = (event.get("user") or {}).get("username", "")
        v: dict[str, Any] = {
            "version": first + len(out), "resourceVersion": str(seq), "auditID": event.get("auditID", ""),
            "time": event.get("stageTimestamp", ""), "user": user, "verb": verb,
            "subresource": (event.get("objectRef") or {}).get("subresource") or "",
            "code": (event.get("responseStatus") or {}).get("code"), "complete": True, "deleted": False,
        }
        new: dict[str, Any] | None = None
        reason = ""
        if verb == "delete":
            v["deleted"] = True
            finalizing = _is_object(resp) and (resp.get("metadata") or {}).get("finalizers")
            new = _clean(resp) if finalizing and isinstance(resp, dict) else None
            state, known = new, True
            v["object"] = new
            out.append(v)
            continue
        if verb == "patch":
            v["patch"], v["patchType"] = req, patch_type(req)
        if _is_object(resp):
            new = _clean(resp)
        elif verb in ("create", "update"):
            if _is_object(req) or isinstance(req, dict):
                new = _clean(req)
            else:
                reason = "request body not logged (audit level Metadata)"
        elif req is None:
            reason = "patch body not logged (audit level Metadata)"
        elif not known or state is None:
            reason = "no known state before this patch"
        else:
            new, v["patchType"], reason = apply_patch(state, req, builtin)
            if new is not None:
                new = _clean(new)
        if new is None:
            v["complete"], v["reason"] = False, reason
        v["object"] = new
        state, known = new, new is not None
        out.append(v)
    return out


# ---- fields, diff, history, bisect -----------------------------------------------------------------

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_field(field: str) -> list[str | int]:
    """``spec.containers[0].image`` or ``spec.containers.0.image`` -> ['spec', 'containers', 0, 'image']."""
    out: list[str | int] = []
    for name, index in _SEGMENT.findall(field or ""):
        if index:
            out.append(int(index))
        elif name.isdigit():
            out.append(int(name))
        else:
            out.append(name)
    return out


def get_field(obj: Any, field: str) -> Any:
    """The value at ``field`` or the sentinel ``MISSING``."""
    for part in parse_field(field):
        if isinstance(part, int) and isinstance(obj, list) and part < len(obj):
            obj = obj[part]
        elif isinstance(obj, dict) and str(part) in obj:
            obj = obj[str(part)]
        else:
            return MISSING
    return obj


MISSING = _MISSING


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """Changes from ``old`` to ``new``: {op: add|remove|replace, path, from, to}; MISSING means absent."""
    if old is MISSING and new is MISSING:
        return []
    if old is MISSING:
        return [{"op": "add", "path": path, "to": new}]
    if new is MISSING:
        return [{"op": "remove", "path": path, "from": old}]
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[dict[str, Any]] = []
        for key in sorted(set(old) | set(new), key=str):
            changes += diff(old.get(key, MISSING), new.get(key, MISSING), _join(path, key))
        return changes
    if isinstance(old, list) and isinstance(new, list):
        changes = []
        for i in range(max(len(old), len(new))):
            changes += diff(old[i] if i < len(old) else MISSING, new[i] if i < len(new) else MISSING, _join(path, i))
        return changes
    if old == new and type(old) is type(new):
        return []
    return [{"op": "replace", "path": path, "from": old, "to": new}]


VOLATILE = ("metadata.resourceVersion", "metadata.generation", "metadata.managedFields", "metadata.uid",
            "metadata.creationTimestamp", "metadata.deletionTimestamp", "status")


def _short(value: Any, width: int = 24) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def describe_change(old: dict[str, Any] | None, new: dict[str, Any] | None, width: int = 72) -> str:
    """One short line for a person: "created", "deleted", or "spec.replicas: 2 -> 3, ..." (spec and
    labels/annotations; bookkeeping fields such as resourceVersion and status are left out)."""
    if new is None:
        return "deleted"
    if old is None:
        return "created"
    parts = []
    for c in diff(old, new):
        if c["path"].startswith(VOLATILE):
            continue
        if c["op"] == "add":
            parts.append(f"{c['path']}: {_short(c['to'])}")
        elif c["op"] == "remove":
            parts.append(f"{c['path']} removed")
        else:
            parts.append(f"{c['path']}: {_short(c['from'])} -> {_short(c['to'])}")
    text = ", ".join(parts) or "no change"
    return text if len(text) <= width else text[: width - 1] + "…"


def summary(v: dict[str, Any]) -> dict[str, Any]:
    """A version without its object and patch bodies."""
    return {k: val for k, val in v.items() if k not in ("object", "patch")}


def field_history(vs: Sequence[dict[str, Any]], field: str = "spec") -> list[dict[str, Any]]:
    """The versions in which ``field`` changed (incomplete versions are listed: the value is unknown)."""
    out: list[dict[str, Any]] = []
    last: Any = MISSING
    last_known = True  # before the first version the field did not exist
    for v in vs:
        if not v["complete"]:
            out.append({**summary(v), "value": None, "changes": None})
            last_known = False
            continue
        value = MISSING if v["object"] is None else get_field(v["object"], field)
        if last_known and diff(last, value) == [] and not v["deleted"] and out:
            continue
        changes = diff(last, value, field) if last_known else None
        out.append({**summary(v), "value": None if value is MISSING else value, "changes": changes})
        last, last_known = value, True
    return out


def diff_versions(start: dict[str, Any], end: dict[str, Any], field: str = "") -> dict[str, Any]:
    def pick(v: dict[str, Any]) -> Any:
        if v["object"] is None:
            return MISSING
        return get_field(v["object"], field) if field else v["object"]

    return {"from": summary(start), "to": summary(end), "field": field,
            "changes": diff(pick(start), pick(end), field)}


def parse_value(raw: str) -> Any:
    """A bisect value: JSON when it parses (3, true, {"a":1}), else the string itself."""
    import json

    try:
        return json.loads(raw)
    except ValueError:
        return raw


def bisect(vs: Sequence[dict[str, Any]], field: str, raw: str) -> dict[str, Any] | None:
    """The first version where ``field`` equals the value. Versions that cannot be rebuilt are skipped
    and listed: the value may have appeared in one of them first (then ``uncertain`` is true)."""
    want = parse_value(raw)
    skipped: list[int] = []
    previous: dict[str, Any] | None = None
    for v in vs:
        if not v["complete"]:
            skipped.append(v["version"])
            continue
        value = MISSING if v["object"] is None else get_field(v["object"], field)
        if value is not MISSING and (value == want or value == raw):
            return {"field": field, "value": value, "version": summary(v),
                    "previous": summary(previous) if previous else None,
                    "uncertain": bool(skipped), "skippedVersions": skipped}
        previous = v
    return None
