"""The one change summariser: what a request changed, in words, for a person. Pure, no I/O.

Used for the ``change`` of an audit ConfigMap entry, the ``change`` of each version the API returns and
the CHANGE column of ``kubectl audit``: "created", "deleted", "failed (403)", "spec.replicas: 2 -> 3",
"spec.backup: daily -> removed", "labels.team: a" (old value unknown), "no change". When both states are
known it compares them; else it reads the request body (a JSON patch's operations, a merge patch's
leaves) with old values from the state before when that is known. Bookkeeping (resourceVersion,
managedFields, ...) is left out, and so is ``status`` unless the request was to the status subresource.
"""

from __future__ import annotations

import json
from typing import Any

from kube_audit.model.fields import MISSING, Keys, changes, leaves, lookup, render

CHANGE_LIMIT = 200  # characters of a summary
VALUE_LIMIT = 40  # characters of one value in it
NOISE = frozenset({"resourceVersion", "managedFields", "generation", "uid", "creationTimestamp", "selfLink",
                   "deletionTimestamp"})  # below metadata

Change = tuple[Keys, Any, Any]  # keys, old (MISSING: absent or unknown), new (MISSING: removed)


def _noise(keys: Keys, subresource: str) -> bool:
    if not keys:
        return False
    if keys[0] == "metadata" and len(keys) > 1 and keys[1] in NOISE:
        return True
    return keys[0] == "status" and subresource != "status"


def show(value: Any, width: int = VALUE_LIMIT) -> str:
    """A value as JSON (a string as itself), cut to ``width`` characters."""
    try:
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                                                                default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _pointer(path: Any) -> Keys:
    return tuple(p.replace("~1", "/").replace("~0", "~") for p in str(path).lstrip("/").split("/")) if path else ()


def _from_body(body: Any, verb: str, before: dict[str, Any] | None) -> list[Change]:
    """Changes as the request body names them; old values from ``before`` when it is known."""
    old = (lambda keys: lookup(before, keys)) if before is not None else (lambda keys: MISSING)
    out: list[Change] = []
    if isinstance(body, list):  # JSON patch
        for op in body:
            if isinstance(op, dict) and op.get("op") in ("add", "replace", "remove"):
                keys = _pointer(op.get("path", ""))
                out.append((keys, old(keys), MISSING if op["op"] == "remove" else op.get("value")))
    elif isinstance(body, dict) and verb == "patch":  # merge or strategic merge patch
        for keys, new in leaves(body, keep_null=True):
            if not str(keys[-1]).startswith("$") and not str(keys[0]).startswith("$"):
                out.append((keys, old(keys), MISSING if new is None else new))
    return out


def _expand(keys: Keys, old: Any, new: Any) -> list[Change]:
    """A map added or removed whole, as its leaves (``status.ready: true``, not ``status: {...}``)."""
    if old is MISSING and isinstance(new, dict) and new:
        return [((*keys, *k), MISSING, v) for k, v in leaves(new)]
    if new is MISSING and isinstance(old, dict) and old:
        return [((*keys, *k), v, MISSING) for k, v in leaves(old)]
    return [(keys, old, new)]


def _text(change: Change, known: bool) -> str:
    keys, old, new = change
    path = render(keys)
    if old is MISSING or not known:
        return f"{path}: {'removed' if new is MISSING else show(new)}"
    return f"{path}: {show(old)} -> {'removed' if new is MISSING else show(new)}"


def _join(parts: list[str], limit: int) -> str:
    out = ""
    for i, part in enumerate(parts):
        more = f" (+{len(parts) - i} more)" if i < len(parts) - 1 else ""
        candidate = f"{out}, {part}" if out else part
        if len(candidate) > limit - len(more):
            if out:
                return out + f" (+{len(parts) - i} more)"
            rest = f" (+{len(parts) - 1} more)" if len(parts) > 1 else ""
            return part[: limit - len(rest) - 1] + "…" + rest
        out = candidate
    return out


def summarize_change(verb: str, subresource: str = "", code: int | None = None, body: Any = None,
                     before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
                     limit: int = CHANGE_LIMIT) -> str:
    """What one request changed. ``before``/``after``: the object's states around it, None when not known."""
    if code is not None and code >= 300:
        return f"failed ({code})"
    if verb == "create" and not subresource:
        return "created"
    if verb == "delete":
        return "deleted"
    if before is not None and after is not None:
        found = [c for _, keys, a, b in changes(before, after) for c in _expand(keys, a, b)]
    else:
        found = _from_body(body, verb, before)
    kept = [c for c in found if not _noise(c[0], subresource) and (c[1] is MISSING or c[1] != c[2])]
    if kept:
        return _join([_text(c, before is not None) for c in kept], limit)
    if (before is not None and after is not None) or (isinstance(body, dict | list) and
                                                      (before is not None or verb == "patch")):
        return "no change"
    return {"update": "updated", "patch": "patched"}.get(verb, verb)
