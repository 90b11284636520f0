"""Replaying a logged patch on the last known state of an object. Pure, no I/O.

The content type of a patch is not in the audit event, so it is inferred: a JSON list is a JSON patch
(RFC 6902, applied by the ``jsonpatch`` library), a map is a merge patch (RFC 7386, ``json-merge-patch``).
A map may also have been a strategic merge patch. That one stays ours to judge: no Python library
implements it (its merge keys and strategies are Go struct tags of each built-in type), so instead of
replaying it we detect where it may differ from a merge patch and say so (``reason``) rather than guess:
  - a ``$patch``, ``$retainKeys``, ``$setElementOrder/..`` or ``$deleteFromPrimitiveList/..`` directive;
  - on a built-in resource, a patch that replaces a non-empty list of maps (a strategic merge patch
    would have merged it by key, e.g. containers by name);
  - a server-side apply body (a map with apiVersion and kind): its result depends on field ownership.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import json_merge_patch
import jsonpatch
import jsonpointer


class PatchError(ValueError):
    """A patch that cannot be applied to the known state."""


def directive(patch: Any) -> str | None:
    """The first strategic merge directive (a key starting with ``$``) anywhere in ``patch``."""
    if isinstance(patch, dict):
        for key, value in patch.items():
            if isinstance(key, str) and key.startswith("$"):
                return key
            found = directive(value)
            if found:
                return found
    elif isinstance(patch, list):
        for item in patch:
            found = directive(item)
            if found:
                return found
    return None


def replaced_lists(target: Any, patch: Any, path: str = "") -> list[str]:
    """Paths where a merge patch replaces a non-empty list of maps with a different list."""
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return []
    out: list[str] = []
    for key, value in patch.items():
        sub = f"{path}.{key}" if path else str(key)
        old = target.get(key)
        if (isinstance(value, list) and isinstance(old, list) and old and old != value
                and any(isinstance(i, dict) for i in old + value)):
            out.append(sub)
        elif isinstance(value, dict):
            out += replaced_lists(old, value, sub)
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 on a copy of ``target`` (the library merges in place)."""
    return json_merge_patch.merge(copy.deepcopy(target), copy.deepcopy(patch))


def json_patch(doc: Any, ops: Sequence[Any]) -> Any:
    """RFC 6902 on a copy of ``doc``; PatchError when it does not apply."""
    try:
        return jsonpatch.apply_patch(doc, list(ops), in_place=False)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, KeyError,
            IndexError, ValueError, AttributeError) as exc:
        raise PatchError(str(exc) or type(exc).__name__) from exc


def patch_type(patch: Any) -> str:
    """The inferred content type: json (RFC 6902), merge (RFC 7386), strategic, apply (server-side)."""
    if isinstance(patch, list):
        return "json"
    if isinstance(patch, dict):
        if patch.get("apiVersion") and patch.get("kind"):
            return "apply"
        return "strategic" if directive(patch) else "merge"
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
    found = directive(patch)
    if found:
        return None, "strategic", f"strategic merge directive {found!r} cannot be replayed"
    lists = replaced_lists(state, patch) if builtin else []
    if lists:
        return None, "merge", (f"patch replaces the list {lists[0]}; a strategic merge patch would have "
                               "merged it by key")
    return merge_patch(state, patch), "merge", ""
