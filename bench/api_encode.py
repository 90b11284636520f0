"""The API's CPU per event it sends: watch lines and list items made from the stored JSON by splicing, next to
the parsed path (the stored JSON parsed, the item built and encoded again: what every line and item took
before), in the same process, on realistic events (bench/events.py) as the store keeps them.

    python -m bench.api_encode [--events 5000]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from bench.events import many  # noqa: E402
from kube_audit.model.audit import AuditEvent, parse  # noqa: E402
from kube_audit.model.source import SourceId  # noqa: E402
from tailer.api import resource as r  # noqa: E402


def best(fn: Callable[[], Any], n: int, runs: int = 7) -> float:
    """µs per event of the fastest of ``runs`` passes."""
    fastest = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        fastest = min(fastest, time.perf_counter() - start)
    return fastest / n * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--events", type=int, default=5000)
    a = p.parse_args()
    source = SourceId("eu-1", "apiserver-0")
    stored = [e.json for e in map(parse, many(a.events)) if isinstance(e, AuditEvent)]
    rows = [(seq, data, source) for seq, data in enumerate(stored, 1)]
    gc.freeze()
    cases: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        ("watch line, item", lambda: [r.dump(r.item(s, r.loads(d), source=src)) for s, d, src in rows],
         lambda: [r.item_json(s, d, src) for s, d, src in rows]),
        ("watch line, Table (includeObject=Metadata)",
         lambda: [r.dump(r.table("v1", [r.row(s, r.loads(d), "Metadata", src)], {})) for s, d, src in rows],
         lambda: [r.table_json("v1", s, d, "Metadata", src) for s, d, src in rows]),
        ("list page, items", lambda: r.event_list([r.item(s, r.loads(d), None, src) for s, d, src in rows], {}),
         lambda: r.event_list(r.list_items(rows, {})[0], {})),
        ("list page, Table (includeObject=Metadata)",
         lambda: r.table_body("v1", [r.row(s, r.loads(d), "Metadata", src) for s, d, src in rows], {}),
         lambda: r.table_body("v1", r.table_rows(rows, "Metadata")[0], {})),
    ]
    print(f"{len(rows)} realistic events, µs of CPU per event (fastest of 7 passes)")
    for name, parsed, spliced in cases:
        before, after = best(parsed, len(rows)), best(spliced, len(rows))
        print(f"{name:44} parsed {before:5.1f} | spliced {after:5.1f} | {before / after:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
