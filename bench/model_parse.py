"""The ack path's per-record model cost: parse (validate once, view, redact, JSON) on realistic events.

    python -m bench.model_parse [--events 20000]

Compares ``kube_audit.model.audit.parse`` with what the sinks did before it, each on its own: encode for
stdout, then view + redact + encode again for the store (no validation).
"""

from __future__ import annotations

import argparse
import time

import orjson

from bench.synth import events
from kube_audit.model.audit import parse, redact, view


def rate(fn, records) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    for r in records:
        fn(r)
    return len(records) / (time.perf_counter() - t)


def before(record: dict) -> None:  # type: ignore[type-arg]
    orjson.dumps(record)  # stdout
    body = redact(record)
    view(body)
    orjson.dumps(body)  # store


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=20_000)
    n = p.parse_args().events
    for big_every, what in ((0, "1-2 KB events"), (100, "with 1% of 100 KB objects")):
        records = list(events(n, big_every=big_every))
        new, old = rate(parse, records), rate(before, records)
        print(f"model parse ({what}): {new:,.0f} records/s  (before, unvalidated, encoded twice: {old:,.0f}/s)")


if __name__ == "__main__":
    main()
