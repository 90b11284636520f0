"""kubectl audit verify [--source S] [--cluster C] [--since T]: the tailer re-checks the stored chunk
chain and events (GET {PREFIX}/verify) and this prints the first sequence where a row was altered,
deleted or inserted, and where a forwarder's chain breaks. Exit status 0 when clean, 1 otherwise."""

from __future__ import annotations

import argparse
from typing import Any

from kube_audit.contract import PREFIX, VERIFY
from kubectl_audit.printer import emit, table


def where(p: dict[str, Any]) -> str:
    source = f"{p['cluster']}/{p['source']}" if p.get("cluster") else p.get("source") or "-"
    return f"link {p['link']} ({source} seq {p.get('seq', 0)})" if "link" in p else "no link"


def render(body: dict[str, Any]) -> str:
    checked = body["checked"]
    if body["clean"]:
        return f"verified {checked['links']} links, {checked['rows']} rows: clean\n"
    out = f"verified {checked['links']} links, {checked['rows']} rows: NOT clean\n"
    problems, breaks = body["problems"], body["breaks"]
    if problems:
        first = problems[0]
        row = f"row {first['row']}" + (f" (auditID {first['auditID']})" if first.get("auditID") else "") \
            if first.get("row") else ""
        out += f"first problem: {first['kind']} {row} at {where(first)}: {first['message']}\n"
        out += table(["KIND", "LINK", "SOURCE", "SEQ", "ROW", "AUDITID", "MESSAGE"],
                     [[p["kind"], p.get("link"), p.get("source"), p.get("seq"), p.get("row"), p.get("auditID"),
                       p["message"]] for p in problems])
    if breaks:
        out += "chain breaks (events may be missing between the forwarder and the store):\n"
        out += table(["CLUSTER", "SOURCE", "EPOCH", "SEQ", "KIND", "LINK"],
                     [[b["cluster"], b["source"], b["epoch"], b["seq"], b["kind"], b["link"]] for b in breaks])
    return out


def verify(client: Any, args: argparse.Namespace) -> int:
    body = client.get(f"{PREFIX}/{VERIFY}", {"source": args.source, "cluster": args.cluster, "since": args.since})
    emit(body, args.output, render)
    return 0 if body.get("clean") else 1


def run(args: argparse.Namespace) -> int:
    from kubectl_audit.api import Client

    client = Client(args)
    with client.http:
        return verify(client, args)
