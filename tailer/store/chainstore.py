"""The chain's SQL (issue 12: tamper evidence), a part of the store kept apart from base.py: the link
of each chunk written in the chunk's own transaction (``_chain_link``, called by ``Store._insert``),
what retention deleted (``_chain_pruned``, called by ``PruneStore._delete_oldest``), the gap scan, the
breaks the sources view shows, and the reads ``verify`` needs. The pure rules are in tailer/chain/link.py.

Nothing here runs unless ``chain_key`` is set (the chain stage sets it: --integrity-key-file, else the
shared key): a tailer without a key stores no links.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from kube_audit.model import chain
from kube_audit.model.source import SourceId
from tailer.chain import link as L
from tailer.store.rows import to_row

# The columns the API filters on, which verify checks against the sealed body they were derived from: a
# row whose body is intact but whose ``username`` says someone else would hide it from ``--user`` lists.
CHECKED = ("audit_id", "stage", "ts", "verb", "level", "username", "api_group", "resource", "namespace", "name",
           "subresource", "code")


def columns_differ(body: bytes, stored: tuple[Any, ...]) -> str | None:
    """Why the stored columns are not the ones the (sealed) body gives, or None when they are."""
    try:
        row = to_row(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None  # a body only the slow JSON path reads (lone surrogates): its digest is all we check
    if row is None:
        return "its event is not an audit event"
    for name, value in zip(CHECKED, stored, strict=True):
        want = getattr(row, name)
        if value != want and not (isinstance(want, float) and value is not None and abs(float(value) - want) < 1e-6):
            return f"its {name} column says {value!r}, its event {want!r}"
    return None

T = TypeVar("T")
LINK_COLUMNS = ("id", "cluster", "source", "tag", "epoch", "seq", "prev", "mac", "state", "received", "lo", "hi",
                "rows", "digests", "seal")
BATCH_ROWS = 5_000  # rows one verify batch reads at most (a bigger chunk is read alone)
SCAN_CURSOR = "chain-gap-scan"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _stored(row: Any) -> L.Stored:
    (id_, cluster, source, tag, epoch, seq, prev, mac, state, received, lo, hi, rows, digests, seal) = row
    return L.Stored(int(id_), cluster, source, tag, int(epoch), int(seq), bytes(prev), bytes(mac), state,
                    int(received), int(lo), int(hi), bytes(rows), bytes(digests), bytes(seal))


class ChainStore:
    """Mixed into Store (base.py): uses its ``ph``, ``codec``, ``_write``, ``_read``, ``_transaction`` and
    ``_fetch``."""

    chain_key: bytes | None = None
    ph: str
    codec: Any
    if TYPE_CHECKING:  # Store's, declared here for the type checker
        def _transaction(self) -> AbstractContextManager[Any]: ...
        async def _write(self, fn: Callable[[], T]) -> T: ...
        async def _read(self, fn: Callable[[Any], T]) -> T: ...
        def _fetch(self, conn: Any) -> Callable[[int], bytes | None]: ...

    # ---- in the writer's transactions ----

    def _anchor(self, conn: Any) -> tuple[L.Anchor, bytes] | None:
        row = conn.execute("SELECT start_row, link_id, link_seal, pruned_row, seal FROM audit_chain_anchor "
                           "WHERE id = 1").fetchone()
        if row is None:
            return None
        return L.Anchor(int(row[0]), int(row[1]), bytes(row[2]), int(row[3])), bytes(row[4])

    def _put_anchor(self, conn: Any, a: L.Anchor, insert: bool = False) -> None:
        assert self.chain_key is not None
        p = self.ph
        values = (a.start_row, a.link_id, a.link_seal, a.pruned_row, L.anchor_seal(self.chain_key, a))
        if insert:
            conn.execute("INSERT INTO audit_chain_anchor (id, start_row, link_id, link_seal, pruned_row, seal) "
                         f"VALUES (1, {p}, {p}, {p}, {p}, {p})", values)
        else:
            conn.execute(f"UPDATE audit_chain_anchor SET start_row = {p}, link_id = {p}, link_seal = {p}, "
                         f"pruned_row = {p}, seal = {p} WHERE id = 1", values)

    def _chain_link(self, conn: Any, link: L.Link | None, rows: list[Any], lo: int,
                    placed: Sequence[int] | None = None, upto: int | None = None) -> int:
        """Write the link of one chunk whose rows were just inserted above ``lo`` (and at most at ``upto``);
        returns the new top. ``placed``: the sequence of each row, known when none was a repeat (no read)."""
        assert self.chain_key is not None
        p = self.ph
        if link is None:  # a chunk that came by another way than the pipeline: sealed all the same
            link = L.Link(SourceId("", ""), "")
        if placed is not None:
            refs, hi = list(placed), (placed[-1] if placed else lo)
        else:
            refs, hi = self._find_rows(conn, rows, lo, upto)
        if link.seq:
            self._classify(conn, link)
        elif not link.outcome:
            link.outcome = L.UNCHAINED
        last = conn.execute("SELECT id, seal FROM audit_chain ORDER BY id DESC LIMIT 1").fetchone()
        anchor = self._anchor(conn)
        if anchor is None and last is None:
            anchor = (L.Anchor(start_row=lo), b"")
            self._put_anchor(conn, anchor[0], insert=True)
        base_id, base_seal = (anchor[0].link_id, anchor[0].link_seal) if anchor else (0, chain.GENESIS)
        prev_id, prev_seal = (int(last[0]), bytes(last[1])) if last and int(last[0]) > base_id else (base_id, base_seal)
        stored = L.Stored(prev_id + 1, link.source.cluster, link.source.name, link.tag, link.epoch, link.seq,
                          link.prev, link.mac, link.state, _now_ms(), lo, hi, L.pack_rows(refs),
                          b"".join(chain.body_digest(r.event) for r in rows), b"")
        values = [getattr(stored, c) for c in LINK_COLUMNS[:-1]] + [L.seal(self.chain_key, stored, prev_seal)]
        conn.execute(f"INSERT INTO audit_chain ({', '.join(LINK_COLUMNS)}) VALUES ({', '.join([p] * len(values))})",
                     values)
        return hi

    def _find_rows(self, conn: Any, rows: list[Any], lo: int, upto: int | None) -> tuple[list[int], int]:
        """(the sequence of each row, the top inserted) when some were repeats: read back."""
        p = self.ph
        bound, args = (f" AND seq <= {p}", (lo, upto)) if upto is not None else ("", (lo,))
        new = conn.execute(f"SELECT seq, ts, audit_id, stage FROM audit_events WHERE seq > {p}{bound} ORDER BY seq",
                           args).fetchall()
        where = {(float(ts), a, s): int(seq) for seq, ts, a, s in new}
        refs = []
        for r in rows:
            seq = where.get((r.ts, r.audit_id, r.stage))
            if seq is None:  # a repeat: the row an earlier chunk stored
                found = conn.execute(f"SELECT seq FROM audit_events WHERE ts = {p} AND audit_id = {p} AND "
                                     f"stage = {p}", (r.ts, r.audit_id, r.stage)).fetchone()
                seq = int(found[0]) if found else 0
            refs.append(seq)
        return refs, (int(new[-1][0]) if new else lo)

    def _classify(self, conn: Any, link: L.Link) -> None:
        p, src = self.ph, (link.source.cluster, link.source.name)

        def at(seq: int, columns: str) -> tuple[Any, ...]:
            return tuple(tuple(bytes(v) if isinstance(v, (bytes, memoryview)) else v for v in row)
                         for row in conn.execute(f"SELECT {columns} FROM audit_chain WHERE cluster = {p} AND "
                                                 f"source = {p} AND seq = {p}", (*src, seq)).fetchall())

        newest = conn.execute(f"SELECT epoch FROM audit_chain WHERE cluster = {p} AND source = {p} AND seq > 0 "
                              "ORDER BY id DESC LIMIT 1", src).fetchone()
        epoch = int(newest[0]) if newest else 0
        top = 0
        if link.seq == 1 and epoch:
            top = int(conn.execute(f"SELECT MAX(seq) FROM audit_chain WHERE cluster = {p} AND source = {p} "
                                   f"AND epoch = {p}", (*src, epoch)).fetchone()[0])
        known = L.Known(at(link.seq, "epoch, prev, mac"), at(link.seq - 1, "epoch, mac"),
                        at(link.seq + 1, "epoch, prev"), epoch, top)
        outcome, link.epoch, kind = L.classify(link, known)
        if not link.outcome:  # a chunk stored event by event keeps the outcome of its first part
            link.outcome, link.break_kind = outcome, kind
        now = time.time()
        if kind is not None and link.break_kind == kind:
            detail = {L.BAD_MAC: "the chunk's MAC does not match its events (stored, flagged)",
                      L.RESTARTED: "the forwarder started a new chain at seq 1 (its checkpoint was lost)"}[kind]
            self._add_break(conn, link.source, link.epoch, link.seq, link.seq, kind, detail, now)
        self._resolve(conn, link, now)

    def _add_break(self, conn: Any, source: SourceId, epoch: int, first: int, last: int, kind: str, detail: str,
                   now: float) -> bool:
        p = self.ph
        cur = conn.execute("INSERT INTO audit_chain_breaks (cluster, source, epoch, first_seq, last_seq, kind, "
                           f"detail, detected) VALUES ({', '.join([p] * 8)}) ON CONFLICT DO NOTHING",
                           (source.cluster, source.name, epoch, first, last, kind, detail, now))
        return bool(cur.rowcount)

    def _resolve(self, conn: Any, link: L.Link, now: float) -> None:
        """A late link fills (part of) a break found earlier: resolve it, keep the rest as breaks."""
        p, seq = self.ph, link.seq
        src = (link.source.cluster, link.source.name, link.epoch)
        found = conn.execute(f"SELECT id, first_seq, last_seq, kind FROM audit_chain_breaks WHERE cluster = {p} "
                             f"AND source = {p} AND epoch = {p} AND resolved IS NULL AND kind IN ('missing', "
                             f"'prev_mismatch') AND first_seq <= {p} AND last_seq >= {p}", (*src, seq, seq)).fetchall()
        for id_, first, last, kind in found:
            if kind == L.PREV_MISMATCH and not conn.execute(
                    f"SELECT 1 FROM audit_chain WHERE cluster = {p} AND source = {p} AND epoch = {p} AND seq = {p} "
                    f"AND prev = {p}", (*src, seq + 1, link.mac)).fetchone():
                continue
            conn.execute(f"UPDATE audit_chain_breaks SET resolved = {p} WHERE id = {p}", (now, id_))
            link.resolved.append((int(first), int(last), str(kind)))
            for a, b in ((int(first), seq - 1), (seq + 1, int(last))):
                if a <= b and self._add_break(conn, link.source, link.epoch, a, b, L.MISSING, "chunks never received",
                                              now):
                    link.still_missing.append((a, b))

    def _chain_pruned(self, conn: Any, top: int) -> None:
        """Retention deleted the rows up to ``top``: delete the links wholly below it and seal the anchor."""
        if self.chain_key is None:
            return
        found = self._anchor(conn)
        if found is None:  # a deleted anchor stays missing: verify reports it
            return
        a = found[0]
        last = conn.execute(f"SELECT id, seal FROM audit_chain WHERE hi <= {self.ph} ORDER BY hi DESC, id DESC "
                            "LIMIT 1", (top,)).fetchone()
        link_id, link_seal = (int(last[0]), bytes(last[1])) if last else (a.link_id, a.link_seal)
        if last:
            conn.execute(f"DELETE FROM audit_chain WHERE id <= {self.ph}", (link_id,))
        self._put_anchor(conn, L.Anchor(a.start_row, link_id, link_seal, max(a.pruned_row, top)))

    # ---- writer jobs ----

    async def chain_start(self, key: bytes) -> None:
        """Turn the chain on; a store that never had one gets its anchor (older rows are not checked)."""
        self.chain_key = key

        def start() -> None:
            with self._transaction() as conn:
                if self._anchor(conn) is None and conn.execute("SELECT 1 FROM audit_chain LIMIT 1").fetchone() is None:
                    top = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_events").fetchone()[0]
                    pruned = conn.execute("SELECT COALESCE(MAX(max_seq), 0) FROM audit_pruned").fetchone()[0]
                    self._put_anchor(conn, L.Anchor(start_row=max(int(top), int(pruned))), insert=True)

        await self._write(start)

    async def chain_scan(self, older_than: float) -> list[dict[str, Any]]:
        """The gap scan: links received before ``older_than`` (epoch seconds) and not scanned yet whose
        predecessor is still not stored become breaks (``missing``, or ``prev_mismatch`` when another
        link holds that seq). Returns the breaks it added."""
        p, limit = self.ph, int(older_than * 1000)

        def scan() -> list[dict[str, Any]]:
            added: list[dict[str, Any]] = []
            with self._transaction() as conn:
                row = conn.execute(f"SELECT seq FROM audit_cursors WHERE name = {p}", (SCAN_CURSOR,)).fetchone()
                after = int(row[0]) if row else 0
                upto = conn.execute(f"SELECT MAX(id) FROM audit_chain WHERE id > {p} AND received < {p}",
                                    (after, limit)).fetchone()[0]
                if upto is None:
                    return added
                late = conn.execute(
                    "SELECT a.cluster, a.source, a.epoch, a.seq FROM audit_chain a WHERE a.id > "
                    f"{p} AND a.id <= {p} AND a.seq > 1 AND NOT EXISTS (SELECT 1 FROM audit_chain b WHERE "
                    "b.cluster = a.cluster AND b.source = a.source AND b.seq = a.seq - 1 AND b.mac = a.prev) "
                    "ORDER BY a.id", (after, int(upto))).fetchall()
                for cluster, source, epoch, seq in late:
                    added += self._gap(conn, SourceId(cluster, source), int(epoch), int(seq))
                conn.execute(f"INSERT INTO audit_cursors (name, seq) VALUES ({p}, {p}) ON CONFLICT (name) DO UPDATE "
                             "SET seq = excluded.seq", (SCAN_CURSOR, int(upto)))
            return added

        return await self._write(scan)

    def _gap(self, conn: Any, source: SourceId, epoch: int, seq: int) -> list[dict[str, Any]]:
        p, key = self.ph, (source.cluster, source.name, epoch)
        below = conn.execute(f"SELECT MAX(seq) FROM audit_chain WHERE cluster = {p} AND source = {p} AND "
                             f"epoch = {p} AND seq < {p}", (*key, seq)).fetchone()[0]
        if below is None:
            return []  # the first link of its chain here: where the tailer first saw the source, or retention
            # took its predecessors (a link deleted otherwise is found by verify: the store numbers its links)
        if below is not None and int(below) == seq - 1:
            first, kind, detail = seq - 1, L.PREV_MISMATCH, "the link before does not match this chunk's prev"
        else:
            first, kind, detail = (int(below) + 1 if below is not None else 1), L.MISSING, "chunks never received"
        if not self._add_break(conn, source, epoch, first, seq - 1, kind, detail, time.time()):
            return []
        return [{"cluster": source.cluster, "source": source.name, "epoch": epoch, "firstSeq": first,
                 "lastSeq": seq - 1, "kind": kind}]

    # ---- reads ----

    async def chain_breaks(self, source: SourceId | None = None, unresolved: bool = True) -> list[dict[str, Any]]:
        """The chain breaks of one source (or all), oldest first, for the sources view: each is a gap
        of that source with reason "chain_break" (detected and resolved in epoch seconds)."""
        p = self.ph
        where, args = ["1 = 1"], []
        if source is not None:
            where.append(f"cluster = {p} AND source = {p}")
            args += [source.cluster, source.name]
        if unresolved:
            where.append("resolved IS NULL")
        sql = ("SELECT cluster, source, epoch, first_seq, last_seq, kind, detail, detected, resolved FROM "
               f"audit_chain_breaks WHERE {' AND '.join(where)} ORDER BY id")
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        return [{"cluster": c, "source": s, "epoch": int(e), "firstSeq": int(f), "lastSeq": int(t), "kind": k,
                 "detail": d, "detected": float(dt), "resolved": float(r) if r is not None else None,
                 "reason": L.REASON} for c, s, e, f, t, k, d, dt, r in rows]

    def _json_of(self, conn: Any, body: Any) -> bytes:
        """A stored body as the JSON it was before compression."""
        return bytes(self.codec.raw(body, self._fetch(conn)))

    async def chain_batch(self, after: int, prev_hi: int, since_ms: int | None = None,
                          links: int = 200) -> dict[str, Any]:
        """One batch for verify: links after id ``after`` (from the first received at or after
        ``since_ms`` when given), the rows they and the gaps between them hold, then the anchor."""
        p = self.ph

        def read(conn: Any) -> dict[str, Any]:
            start = after
            if since_ms is not None and after == 0:
                first = conn.execute(f"SELECT MIN(id) FROM audit_chain WHERE received >= {p}", (since_ms,)).fetchone()[0]
                start = int(first) - 1 if first is not None else 1 << 62
            found = [_stored(r) for r in conn.execute(
                f"SELECT {', '.join(LINK_COLUMNS)} FROM audit_chain WHERE id > {p} ORDER BY id LIMIT {p}",
                (start, links)).fetchall()]
            total, kept = 0, list[L.Stored]()
            for s in found:
                if kept and total + (s.hi - s.lo) > BATCH_ROWS:
                    break
                kept.append(s)
                total += s.hi - s.lo
            prior, prev = None, prev_hi
            if prev < 0:  # the first batch: rows up to the anchor's start_row are older than the chain
                found_anchor = self._anchor(conn)
                prev = found_anchor[0].start_row if found_anchor else 0
            if kept and since_ms is not None and after == 0:
                row = conn.execute(f"SELECT seal FROM audit_chain WHERE id = {p}", (kept[0].id - 1,)).fetchone()
                prior = bytes(row[0]) if row else None
                prev = kept[0].lo
            bodies: dict[int, tuple[str, bytes]] = {}
            mismatch: dict[int, str] = {}  # rows whose filter columns are not what their body says
            columns = ", ".join(CHECKED)

            def keep(seq: int, body: Any, stored: tuple[Any, ...]) -> None:
                bodies[seq] = (stored[0], self._json_of(conn, body))
                if (why := columns_differ(bodies[seq][1], stored)) is not None:
                    mismatch[seq] = why

            if kept:
                for seq, body, *stored in conn.execute(
                        f"SELECT seq, event, {columns} FROM audit_events WHERE seq > {p} AND seq <= {p} ORDER BY seq",
                        (min(prev, kept[0].lo), kept[-1].hi)).fetchall():
                    keep(int(seq), body, tuple(stored))
                for ref in {r for s in kept for r in L.unpack_rows(s.rows) if 0 < r <= min(prev, kept[0].lo)}:
                    row = conn.execute(f"SELECT event, {columns} FROM audit_events WHERE seq = {p}", (ref,)).fetchone()
                    if row is not None:
                        keep(ref, row[0], tuple(row[1:]))
            anchor = self._anchor(conn)  # after the rows: a row retention took meanwhile is below its mark
            tail: list[tuple[int, str]] = []
            top = None
            if not kept:
                tail = [(int(s), a) for s, a in conn.execute(
                    f"SELECT seq, audit_id FROM audit_events WHERE seq > {p} ORDER BY seq LIMIT 10", (prev,)).fetchall()]
                top = conn.execute("SELECT MAX(hi) FROM audit_chain").fetchone()[0]
            return {"links": kept, "bodies": bodies, "mismatch": mismatch, "anchor": anchor, "prior_seal": prior, "prev_hi": prev,
                    "tail": tail, "top": int(top) if top is not None else None}

        return await self._read(read)

    async def chain_continuity(self, cluster: str | None, source: str | None,
                               since_ms: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Where the stored forwarder chains break: a flagged MAC, a chain restarted at seq 1, a link whose
        predecessor (the link at seq - 1 with the MAC its prev names) is not stored (``missing``; another
        link at seq - 1: ``prev_mismatch``)."""
        p = self.ph
        where, args = ["a.seq > 0"], list[Any]()
        for column, value in (("cluster", cluster), ("source", source)):
            if value is not None:
                where.append(f"a.{column} = {p}")
                args.append(value)
        if since_ms is not None:
            where.append(f"a.received >= {p}")
            args.append(since_ms)

        # the first link of a chain has no predecessor here (first seen, or retention took it): not a break
        sql = ("SELECT a.id, a.cluster, a.source, a.epoch, a.seq, a.state, EXISTS (SELECT 1 FROM audit_chain d "
               "WHERE d.cluster = a.cluster AND d.source = a.source AND d.epoch = a.epoch AND d.seq = a.seq - 1) "
               "FROM audit_chain a WHERE "
               f"{' AND '.join(where)} AND (a.state = 'bad_mac' OR (a.seq = 1 AND a.epoch > 1) OR (a.seq > 1 "
               "AND NOT EXISTS (SELECT 1 FROM audit_chain b WHERE b.cluster = a.cluster AND b.source = a.source "
               "AND b.seq = a.seq - 1 AND b.mac = a.prev) AND EXISTS (SELECT 1 FROM audit_chain c WHERE "
               "c.cluster = a.cluster AND c.source = a.source AND c.epoch = a.epoch AND c.seq < a.seq))) "
               f"ORDER BY a.id LIMIT {p}")

        def read(conn: Any) -> list[dict[str, Any]]:
            out = []
            for id_, c, s, epoch, seq, state, fork in conn.execute(sql, (*args, limit)).fetchall():
                kind = L.BAD_MAC if state == L.BAD_MAC else L.RESTARTED if int(seq) == 1 else \
                    L.PREV_MISMATCH if fork else L.MISSING
                out.append({"link": int(id_), "cluster": c, "source": s, "epoch": int(epoch), "seq": int(seq),
                            "kind": kind})
            return out

        return await self._read(read)
