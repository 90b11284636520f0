"""What a source's record reads as: its state and the ``Source`` item the API serves. Pure: no I/O.

State, computed at read time from the record and the clock (the first rule that holds wins):

- ``silent``: nothing (status record or events) came from the source for longer than
  ``--source-silent-after`` (default 30 s: three status intervals of a kube-audit forwarder; a stock
  Fluent Bit peer sends no status, so it turns silent whenever its apiserver is quiet that long);
- ``gap``: the source reported a gap (or the tailer found one, e.g. a chain break) less than
  ``--source-gap-window`` ago (default 1 h), by the time the tailer first had it;
- ``lagging``: its last status said it is more than ``--source-lagging-bytes`` behind its audit log
  (default 64 MiB);
- ``ok`` otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kube_audit.contract import API_VERSION, KIND_SOURCE, KIND_SOURCE_LIST
from kube_audit.model.source import SourceId
from tailer.store.rows import parse_time
from tailer.store.sources import SourceRow


@dataclass(frozen=True)
class Rules:
    silent_after: float = 30.0
    lagging_bytes: int = 64 * 1024 * 1024
    gap_window: float = 3600.0


def rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def status_of(row: SourceRow) -> dict[str, Any]:
    """The last status record of the source ({} when it never sent one)."""
    if not row.status:
        return {}
    try:
        value = json.loads(row.status)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def state(row: SourceRow, now: float, rules: Rules) -> str:
    if now - row.last_seen > rules.silent_after:
        return "silent"
    if any(g.reported >= now - rules.gap_window for g in row.gaps):
        return "gap"
    lag = status_of(row).get("lagBytes")
    if isinstance(lag, int) and lag > rules.lagging_bytes:
        return "lagging"
    return "ok"


def gaps_of(row: SourceRow) -> list[dict[str, Any]]:
    out = []
    for g in row.gaps:
        try:
            gap = json.loads(g.gap)
        except ValueError:
            gap = {}
        out.append({**(gap if isinstance(gap, dict) else {}), "id": g.id, "bytes": g.bytes,
                    "reported": rfc3339(g.reported)})
    return out


def item(row: SourceRow, now: float, rules: Rules) -> dict[str, Any]:
    status = status_of(row)
    gaps = gaps_of(row)
    out: dict[str, Any] = {
        "apiVersion": API_VERSION, "kind": KIND_SOURCE,
        "metadata": {"name": row.source.name, **({"labels": {"cluster": row.source.cluster}}
                                                  if row.source.cluster else {})},
        "name": row.source.name, "cluster": row.source.cluster, "state": state(row, now, rules),
        "lastSeen": rfc3339(row.last_seen), "lastEventTime": rfc3339(row.last_event),
        "lagBytes": status.get("lagBytes"), "gapBytes": sum(g.bytes for g in row.gaps), "gaps": gaps,
        "badLines": status.get("badLines") or {},
    }
    if status:
        out["status"] = {k: status.get(k) for k in ("version", "startTime", "time", "file", "inode", "offset",
                                                    "rotations", "events")}
    return out


def source_list(rows: Iterable[SourceRow], now: float, rules: Rules) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND_SOURCE_LIST, "metadata": {},
            "items": [item(r, now, rules) for r in rows]}


def crossed(rows: Sequence[SourceRow], start: float | None, end: float | None, limit: int = 5) -> list[str]:
    """One line per known gap whose time range meets [start, end] (gaps without a time range cannot be
    placed and are not named here; ``kubectl audit sources`` lists them)."""
    if start is None and end is None:
        return []
    lo, hi = start if start is not None else float("-inf"), end if end is not None else float("inf")
    out = []
    for row in rows:
        for gap in gaps_of(row):
            first = parse_time(gap.get("from") or "")
            last = parse_time(gap.get("to") or "") or first
            first = first if first is not None else last
            if first is None or last is None or first > hi or last < lo:
                continue
            out.append(f"the range shown crosses a known gap of source {SourceId(row.source.cluster, row.source.name)}"
                       f": {gap['bytes']} bytes lost ({gap.get('reason', 'unknown')}) from {gap.get('from')} to "
                       f"{gap.get('to')}; see kubectl audit sources")
            if len(out) == limit:
                return out
    return out
