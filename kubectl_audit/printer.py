"""Output like kubectl's: aligned columns three spaces apart, ``<none>`` for empty cells; JSON; YAML."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any


def cells(row: Sequence[Any]) -> list[str]:
    return ["<none>" if c is None or c == "" else str(c) for c in row]


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], widths: Sequence[int] = ()) -> str:
    """Aligned columns; ``widths`` are minimum widths (a watch fixes them before it has seen its rows)."""
    text = [list(header)] + [cells(r) for r in rows]
    width = [max([len(r[i]) for r in text] + [widths[i] if i < len(widths) else 0]) for i in range(len(header))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, width, strict=True)).rstrip() for r in text) + "\n"


def dump(obj: Any, output: str) -> str:
    if output == "json":
        return json.dumps(obj, indent=4, ensure_ascii=False) + "\n"
    import yaml  # only when asked for: keeps --help fast

    return str(yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def emit(obj: Any, output: str, render: Callable[[Any], str]) -> None:
    sys.stdout.write(render(obj) if output in ("table", "wide") else dump(obj, output))
