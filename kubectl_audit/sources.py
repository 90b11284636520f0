"""kubectl audit sources: the forwarders the tailer hears from, and whether their audit trail is complete.

    kubectl audit sources [NAME] [--cluster C] [-o wide|json|yaml]

One row per source (tailer/api/sources.py serves them): its state (ok, lagging, silent, gap: the rules
are in README's *Sources*), when it was last heard from, how far behind its audit log it is, how many
bytes it reported lost. ``-o wide`` adds the newest event time, the gap count, bad lines and version.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import Any

from kube_audit.contract import sources_path
from kubectl_audit.printer import dump, table

HEADER = ["NAME", "CLUSTER", "STATE", "LAST SEEN", "LAG", "GAP BYTES"]
WIDE = ["LAST EVENT", "GAPS", "BAD LINES", "VERSION"]


def age(stamp: str | None, now: float) -> str:
    """kubectl's short age: 45s, 12m, 3h, 5d."""
    if not stamp:
        return "<unknown>"
    try:
        seconds = max(0, int(now - datetime.fromisoformat(stamp).timestamp()))
    except ValueError:
        return stamp
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size or (unit == "m" and seconds >= 120):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def row(item: dict[str, Any], wide: bool, now: float) -> list[Any]:
    out = [item.get("name"), item.get("cluster"), item.get("state"), age(item.get("lastSeen"), now),
           item.get("lagBytes"), item.get("gapBytes")]
    if wide:
        bad = item.get("badLines") or {}
        out += [item.get("lastEventTime"), len(item.get("gaps") or []),
                ",".join(f"{k}={v}" for k, v in sorted(bad.items())), (item.get("status") or {}).get("version")]
    return out


def render(body: dict[str, Any], output: str, now: float | None = None) -> str:
    if output in ("json", "yaml"):
        return dump(body, output)
    items = body["items"] if body.get("kind") == "SourceList" else [body]
    if not items:
        return "No sources found.\n"
    wide = output == "wide"
    return table(HEADER + (WIDE if wide else []), [row(i, wide, time.time() if now is None else now) for i in items])


def run(client: Any, args: argparse.Namespace) -> None:
    params = {"cluster": getattr(args, "cluster", None)}
    body = client.get(sources_path(args.name or ""), params)
    sys.stdout.write(render(body, args.output))
