"""Verify, pure: re-check a batch of stored links and the rows they name (what ``Store.chain_batch``
read), carrying a small state from batch to batch. Runs in the API's query pool (tailer/api/queries.py):
hashing every stored body is CPU the event loop must not spend.

Problems, in the order found (the first one is what ``kubectl audit verify`` names):
- ``altered``: a row whose body's digest is not the one sealed in its link;
- ``deleted``: a row a link names that is gone, above what retention recorded it deleted;
- ``inserted``: a row no link covers (above the anchor's ``start_row``);
- ``linkAltered``: a link whose seal does not hold (its fields, rows or digests were edited);
- ``linkMissing``: link numbers that are gone (above what retention deleted);
- ``anchor``: the anchor is missing or its seal does not hold.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Any

from kube_audit.model import chain
from tailer.chain import link as L

MAX_PROBLEMS = 100


@dataclass
class State:
    scoped: bool = False  # a source or cluster filter: rows of other sources are not looked at
    cluster: str | None = None
    source: str | None = None
    since: bool = False
    started: bool = False
    prev_id: int = 0
    prev_seal: bytes | None = chain.GENESIS
    prev_hi: int = -1  # -1: the anchor's start_row
    links: int = 0
    rows: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, message: str, **where: Any) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append({"kind": kind, "message": message, **where})


def _where(s: L.Stored) -> dict[str, Any]:
    return {"link": s.id, "cluster": s.cluster, "source": s.source, "seq": s.seq}


def _start(key: bytes, state: State, batch: dict[str, Any]) -> L.Anchor:
    found = batch["anchor"]
    if found is None:
        state.add("anchor", "the chain's anchor is missing (deleted, or the store was edited)")
        return L.Anchor()
    anchor, seal = found
    if L.anchor_seal(key, anchor) != seal:
        state.add("anchor", "the chain's anchor does not hold its seal (edited, or another integrity key)")
    return anchor


def check(key: bytes, state: State, batch: dict[str, Any]) -> State:
    anchor = _start(key, state, batch) if not state.started else (batch["anchor"] or (L.Anchor(), b""))[0]
    links: list[L.Stored] = batch["links"]
    if not state.started:
        state.started = True
        if state.since:
            state.prev_seal = batch["prior_seal"]
            state.prev_id = links[0].id - 1 if links else 0
            if links and state.prev_seal is None and links[0].id - 1 <= anchor.link_id:
                state.prev_seal = anchor.link_seal
        else:
            state.prev_id, state.prev_seal = anchor.link_id, anchor.link_seal
        state.prev_hi = batch["prev_hi"]
    bodies: dict[int, tuple[str, bytes]] = batch["bodies"]
    gone_below = max(anchor.pruned_row, anchor.start_row)
    present = sorted(bodies)
    for s in links:
        if s.id != state.prev_id + 1 and s.id - 1 == anchor.link_id:  # retention ran meanwhile: its anchor
            state.prev_id, state.prev_seal = anchor.link_id, anchor.link_seal
        _link(key, state, s)
        in_scope = (state.cluster is None or s.cluster == state.cluster) and \
                   (state.source is None or s.source == state.source)
        refs, digests = L.unpack_rows(s.rows), L.split_digests(s.digests)
        if in_scope:
            state.rows += len(refs)
            for ref, digest in zip(refs, digests, strict=False):
                if ref == 0:
                    continue  # refused by the database: never stored
                body = bodies.get(ref)
                if body is None:
                    if ref > gone_below:
                        state.add("deleted", f"row {ref} of link {s.id} is gone", row=ref, **_where(s))
                elif chain.body_digest(body[1]) != digest:
                    state.add("altered", f"row {ref} ({body[0]}) was altered", row=ref, auditID=body[0], **_where(s))
                elif ref in batch.get("mismatch", {}):
                    state.add("altered", f"row {ref} ({body[0]}) was altered: {batch['mismatch'][ref]}", row=ref,
                              auditID=body[0], **_where(s))
        if not state.scoped:
            named = set(refs)
            for seq in present[bisect_right(present, state.prev_hi):bisect_left(present, s.hi + 1)]:
                if seq not in named and seq > anchor.start_row:
                    state.add("inserted", f"row {seq} ({bodies[seq][0]}) is in no link", row=seq,
                              auditID=bodies[seq][0], **_where(s))
        state.prev_hi = max(state.prev_hi, s.hi)
    if not links and not state.scoped:
        top = batch["top"] if batch["top"] is not None else state.prev_hi
        for seq, audit_id in batch["tail"]:
            if seq > max(top, anchor.start_row):
                state.add("inserted", f"row {seq} ({audit_id}) is in no link", row=seq, auditID=audit_id)
    return state


def _link(key: bytes, state: State, s: L.Stored) -> None:
    state.links += 1
    if s.id != state.prev_id + 1:
        state.add("linkMissing", f"links {state.prev_id + 1}..{s.id - 1} are gone", link=s.id,
                  missing=[state.prev_id + 1, s.id - 1])
    elif state.prev_seal is None:
        state.add("linkMissing", f"link {s.id - 1} is gone", link=s.id, missing=[s.id - 1, s.id - 1])
    elif L.seal(key, s, state.prev_seal) != s.seal:
        state.add("linkAltered", f"link {s.id} ({s.source or '-'} seq {s.seq}) does not hold its seal", **_where(s))
    state.prev_id, state.prev_seal = s.id, s.seal
