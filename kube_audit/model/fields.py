"""Fields of an object: dotted paths, lookups, and a structural diff. Pure, no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

Keys = tuple[str | int, ...]


class _Missing:
    """An absent value (distinct from JSON null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
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


def lookup(obj: Any, keys: Keys | list[str | int]) -> Any:
    """The value below ``keys`` or MISSING; a digit string indexes a list, an int a map's string key."""
    for key in keys:
        if isinstance(obj, list) and (isinstance(key, int) or str(key).isdigit()) and int(key) < len(obj):
            obj = obj[int(key)]
        elif isinstance(obj, dict) and str(key) in obj:
            obj = obj[str(key)]
        else:
            return MISSING
    return obj


def get_field(obj: Any, field: str) -> Any:
    """The value at ``field`` or the sentinel ``MISSING``."""
    return lookup(obj, parse_field(field))


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def render(keys: Keys, path: str = "") -> str:
    for key in keys:
        path = join(path, key)
    return path


def changes(old: Any, new: Any, keys: Keys = ()) -> Iterator[tuple[str, Keys, Any, Any]]:
    """(op, keys, old, new) from ``old`` to ``new``; op is add, remove or replace; MISSING means absent."""
    if old is MISSING and new is MISSING:
        return
    if old is MISSING:
        yield "add", keys, MISSING, new
    elif new is MISSING:
        yield "remove", keys, old, MISSING
    elif isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            yield from changes(old.get(key, MISSING), new.get(key, MISSING), (*keys, key))
    elif isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            yield from changes(old[i] if i < len(old) else MISSING, new[i] if i < len(new) else MISSING, (*keys, i))
    elif not (old == new and type(old) is type(new)):
        yield "replace", keys, old, new


def diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """Changes from ``old`` to ``new``: {op: add|remove|replace, path, from, to}; MISSING means absent."""
    out: list[dict[str, Any]] = []
    for op, keys, a, b in changes(old, new):
        item: dict[str, Any] = {"op": op, "path": render(keys, path)}
        if a is not MISSING:
            item["from"] = a
        if b is not MISSING:
            item["to"] = b
        out.append(item)
    return out


def leaves(obj: Any, keys: Keys = (), keep_null: bool = False) -> Iterator[tuple[Keys, Any]]:
    """(keys, value) of each leaf of a map; lists and empty maps are leaves."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                yield from leaves(v, (*keys, k), keep_null)
            elif v is not None or keep_null:
                yield (*keys, k), v


def flatten(obj: Any, prefix: str = "", keep_null: bool = False) -> dict[str, Any]:
    """Dotted paths to leaf values; lists are leaves."""
    head = (prefix,) if prefix else ()
    return {".".join(str(k) for k in (*head, *keys)): v for keys, v in leaves(obj, (), keep_null)}
