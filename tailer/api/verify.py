"""GET {PREFIX}/verify[?source=S&cluster=C&since=T]: the chunk chain and the stored events re-checked
(tamper evidence, issue 12). A ``ChainVerification``: ``clean``, what was checked, the problems found in
order (the first names the sequence where a row was altered, deleted or inserted) and where the
forwarders' chains break. ``since`` (RFC 3339 or a duration) bounds the links by the time the tailer
received them. The store reads the batches (Store.chain_batch), the query pool hashes them
(tailer/chain/verify.py), so the event loop does neither.

Access: ``list`` of auditevents at the cluster scope (it reads every row's digest).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from kube_audit.contract import API_VERSION, KIND_VERIFY
from tailer.api.authz import CLUSTER
from tailer.api.errors import ApiError, bad_request, parse_time
from tailer.chain.verify import MAX_PROBLEMS, State, check

PARAMS = {"source", "cluster", "since"}


async def serve(api: Any, request: web.Request) -> web.Response:
    q = request.query
    unknown = set(q) - PARAMS
    if unknown:
        raise bad_request(f"unknown parameter {sorted(unknown)[0]!r}: verify takes source, cluster, since")
    await api._authorize(request, CLUSTER, "list")
    key = getattr(api, "chain_key", None)
    if key is None:
        raise ApiError(503, "ServiceUnavailable", "this tailer keeps no chunk chain: give it --integrity-key-file "
                       "or a shared key")
    since = parse_time(q["since"], time.time()) if q.get("since") else None
    since_ms = int(since * 1000) if since is not None else None
    source, cluster = q.get("source"), q.get("cluster")
    state = State(scoped=source is not None or cluster is not None, cluster=cluster, source=source,
                  since=since is not None)
    after = 0
    while True:
        batch = await api.store.chain_batch(after, state.prev_hi, since_ms)
        state = await api.queries.run(check, key, state, batch)
        if not batch["links"] or len(state.problems) >= MAX_PROBLEMS:
            break
        after = batch["links"][-1].id
    breaks = await api.store.chain_continuity(cluster, source, since_ms)
    scope = {k: v for k, v in (("source", source), ("cluster", cluster), ("since", q.get("since"))) if v}
    body = {"kind": KIND_VERIFY, "apiVersion": API_VERSION, "metadata": {}, "scope": scope,
            "clean": not state.problems and not breaks, "checked": {"links": state.links, "rows": state.rows},
            "problems": state.problems, "breaks": breaks}
    return web.Response(body=orjson.dumps(body), content_type="application/json")
