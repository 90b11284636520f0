"""The store's schema, versioned. ``schema_version`` holds every version applied; a database from before
versioning (it has ``audit_events`` but no ``schema_version``) is version 1. A new database gets the
newest layout at once; an older one runs each migration after its version, in one transaction.

Version 2 (rebuilds ``audit_events``; the rows keep their sequence numbers):
- ``hw``: the highest ``ts`` stored at or below this row's ``seq`` (non-decreasing in ``seq``), so a time
  bound becomes a ``seq`` bound by bisection and the ``ts`` index goes;
- the idempotence key is (ts, audit_id, stage): the same event (a resend) has the same ``ts``, and a key
  that grows with time is inserted at the right edge of its B-tree instead of at a random page (a random
  uuid first made every insert dirty another page: the largest cost of a commit at a million rows);
- the object index holds only the events that can make a version (partial), the only ones its query reads;
- ``dry`` (a ?dryRun request), a running row and byte total (retention reads it instead of ``SUM(bytes)``),
  cursors of store followers, zstd dictionaries (``audit_dicts``), bodies as bytes.

Version 3 (in place, no rebuild: one nullable column):
- ``meta``: what came beside the event on the forward protocol, JSON ``{"tag": ..., "metadata": {...}}``
  (Fluent Bit's ``[[time, metadata], record]`` map, Message mode's ``metadata`` option), NULL when there
  was no metadata and the tag was the forwarder's default: the common case costs no bytes.

Version 4 (in place; issue 12): sources, their status, and the chunk chain. Three sections, one per
stage that owns the tables: identity (columns on ``audit_events``), sources (``audit_sources``), chain
(``audit_chain``, and what retention deleted of it).
Issue 13 adds a fourth, replicas (PostgreSQL only): ``xid`` on ``audit_events``, ``audit_events_hw``
and ``audit_reserve``, so replicas insert concurrently and readers stay gap-free.
"""

from __future__ import annotations

from dataclasses import dataclass

VERSION = 4


@dataclass(frozen=True)
class Types:
    seq: str  # the sequence column, assigned by the database
    real: str
    blob: str
    uri: str  # the requestURI of a version 1 body (JSON text)
    body: str  # a version 1 body as this layout stores it
    override: str  # what lets an INSERT set ``seq`` itself
    keep_sequence: tuple[str, ...]  # new sequence numbers continue above every one ever given out


SQLITE = Types(seq="INTEGER PRIMARY KEY AUTOINCREMENT", real="REAL", blob="BLOB",
               uri="json_extract(event, '$.requestURI')", body="event", override="",
               keep_sequence=("DELETE FROM sqlite_sequence WHERE name = 'audit_events'",
                              "UPDATE sqlite_sequence SET name = 'audit_events' WHERE name = 'audit_events_v1'"))
POSTGRES = Types(seq="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", real="DOUBLE PRECISION", blob="BYTEA",
                 uri="substring(event from '\"requestURI\":\"[^\"]*')", body="convert_to(event, 'UTF8')",
                 override="OVERRIDING SYSTEM VALUE",
                 keep_sequence=("SELECT setval(pg_get_serial_sequence('audit_events', 'seq'), GREATEST("
                                "(SELECT COALESCE(MAX(seq), 0) FROM audit_events_v1), "
                                "(SELECT COALESCE(MAX(max_seq), 0) FROM audit_pruned)) + 1, false)",))

MAKES_VERSION = "stage = 'ResponseComplete' AND verb IN ('create', 'update', 'patch', 'delete')"
INDEXES = [
    f"CREATE INDEX audit_events_object ON audit_events (resource, namespace, name, seq) WHERE {MAKES_VERSION}",
    "CREATE INDEX audit_events_namespace ON audit_events (namespace, seq)",
    "CREATE INDEX audit_events_user ON audit_events (username, seq)",
]
DATA = ("audit_id", "stage", "ts", "verb", "level", "username", "api_group", "resource", "namespace", "name",
        "subresource", "code", "bytes")


def _table(t: Types, version: int = VERSION) -> str:
    meta = f", meta {t.blob}" if version >= 3 else ""
    return f"""CREATE TABLE audit_events (
      seq {t.seq}, hw {t.real} NOT NULL,
      audit_id TEXT NOT NULL, stage TEXT NOT NULL, ts {t.real} NOT NULL,
      verb TEXT NOT NULL, level TEXT NOT NULL, username TEXT NOT NULL,
      api_group TEXT NOT NULL, resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
      subresource TEXT NOT NULL, code BIGINT, dry SMALLINT NOT NULL, bytes INTEGER NOT NULL,
      event {t.blob} NOT NULL{meta},
      UNIQUE (ts, audit_id, stage))"""


def _support(t: Types) -> list[str]:
    return [
        "CREATE TABLE IF NOT EXISTS audit_pruned (id INTEGER PRIMARY KEY, max_seq BIGINT NOT NULL)",
        "INSERT INTO audit_pruned (id, max_seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
        "CREATE TABLE audit_cursors (name TEXT PRIMARY KEY, seq BIGINT NOT NULL)",
        "CREATE TABLE audit_totals (id INTEGER PRIMARY KEY, rows BIGINT NOT NULL, bytes BIGINT NOT NULL)",
        "INSERT INTO audit_totals (id, rows, bytes) SELECT 1, COUNT(*), COALESCE(SUM(bytes), 0) FROM audit_events",
        f"CREATE TABLE audit_dicts (id INTEGER PRIMARY KEY, data {t.blob} NOT NULL)",
    ]


def create(t: Types, version: int = VERSION) -> list[str]:
    """The newest layout, for an empty database (an older ``version``'s from version 2 on, for tests)."""
    return [_table(t, version), *INDEXES, *_support(t), *(_to_v4(t) if version >= 4 else [])]


def v1(t: Types) -> list[str]:
    """The layout before versioning (kept to build old databases in tests)."""
    return [
        f"""CREATE TABLE IF NOT EXISTS audit_events (
          seq {t.seq},
          audit_id TEXT NOT NULL, stage TEXT NOT NULL, ts {t.real} NOT NULL,
          verb TEXT NOT NULL, level TEXT NOT NULL, username TEXT NOT NULL,
          api_group TEXT NOT NULL, resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
          subresource TEXT NOT NULL, code INTEGER, bytes INTEGER NOT NULL, event TEXT NOT NULL,
          UNIQUE (audit_id, stage))""",
        "CREATE INDEX IF NOT EXISTS audit_events_object ON audit_events (resource, namespace, name, seq)",
        "CREATE INDEX IF NOT EXISTS audit_events_namespace ON audit_events (namespace, seq)",
        "CREATE INDEX IF NOT EXISTS audit_events_user ON audit_events (username, seq)",
        "CREATE INDEX IF NOT EXISTS audit_events_ts ON audit_events (ts)",
        "CREATE TABLE IF NOT EXISTS audit_pruned (id INTEGER PRIMARY KEY, max_seq BIGINT NOT NULL)",
        "INSERT INTO audit_pruned (id, max_seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    ]


def _to_v2(t: Types) -> list[str]:
    """Rebuild: copy every row into the new layout (a dry run is told by its requestURI)."""
    columns = ", ".join(DATA)
    steps = [*(f"DROP INDEX IF EXISTS audit_events_{name}" for name in ("object", "namespace", "user", "ts")),
             "ALTER TABLE audit_events RENAME TO audit_events_v1", _table(t, 2),
             f"INSERT INTO audit_events (seq, hw, {columns}, dry, event) {t.override} "
             f"SELECT seq, MAX(ts) OVER (ORDER BY seq), {columns}, "
             f"CASE WHEN {t.uri} LIKE '%dryRun=%' THEN 1 ELSE 0 END, {t.body} FROM audit_events_v1 ORDER BY seq",
             *t.keep_sequence, "DROP TABLE audit_events_v1", *INDEXES, *_support(t)]
    return steps


def _to_v3(t: Types) -> list[str]:
    """Add ``meta``: a nullable column with no default, so both databases add it without rewriting a row."""
    return [f"ALTER TABLE audit_events ADD COLUMN meta {t.blob}"]


def _v4_identity(t: Types) -> list[str]:
    """Issue 12, identity: which source and cluster each event came from (owned by the store's rows).

    ``audit_origins`` names each (cluster, source) once; ``audit_events.origin`` is its id. The column
    has a constant default, so neither database rewrites a row to add it (SQLite keeps the default in
    the schema, PostgreSQL 11+ as the column's missing value): rows from before read as origin 0, named
    (cluster "", source "") when there were any. A small integer costs SQLite no payload byte for ids 0
    and 1 (the common case: one forwarder) and one byte up to 127; PostgreSQL 4 bytes."""
    return [
        "CREATE TABLE audit_origins (id INTEGER PRIMARY KEY, cluster TEXT NOT NULL, source TEXT NOT NULL, "
        "UNIQUE (cluster, source))",
        "INSERT INTO audit_origins (id, cluster, source) SELECT 0, '', '' WHERE EXISTS (SELECT 1 FROM audit_events)",
        "ALTER TABLE audit_events ADD COLUMN origin INTEGER NOT NULL DEFAULT 0",
    ]


def _v4_sources(t: Types) -> list[str]:
    """Issue 12, sources: one record per source (``status``: the last status record it sent, JSON), and
    its gaps, each kept once by the forwarder's id (owned by tailer/sources and tailer/store/sources.py).
    Times are Unix seconds; ``reported``: when the tailer first had the gap."""
    return [
        f"""CREATE TABLE audit_sources (
          cluster TEXT NOT NULL, name TEXT NOT NULL, last_seen {t.real} NOT NULL, last_event {t.real},
          status_time {t.real}, status TEXT, PRIMARY KEY (cluster, name))""",
        f"""CREATE TABLE audit_source_gaps (
          cluster TEXT NOT NULL, name TEXT NOT NULL, id TEXT NOT NULL, reported {t.real} NOT NULL,
          bytes BIGINT NOT NULL, gap TEXT NOT NULL, PRIMARY KEY (cluster, name, id))""",
    ]


def _v4_chain(t: Types) -> list[str]:
    """Issue 12, chain: the chunk chain as received and stored (owned by the chain stage, tailer/chain).

    ``audit_chain``: one link per stored chunk, numbered (``id``) and sealed in commit order; ``rows``
    8 bytes per event (the row it went to), ``digests`` 16 bytes per event; ``received`` in milliseconds.
    ``audit_chain_breaks``: breaks found on receipt or by the gap scan (``resolved`` once a late link
    fills it). ``audit_chain_anchor``: one sealed row, where the chain starts and what retention deleted."""
    return [
        f"""CREATE TABLE audit_chain (
          id BIGINT PRIMARY KEY, cluster TEXT NOT NULL, source TEXT NOT NULL, tag TEXT NOT NULL,
          epoch INTEGER NOT NULL, seq BIGINT NOT NULL, prev {t.blob} NOT NULL, mac {t.blob} NOT NULL,
          state TEXT NOT NULL, received BIGINT NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL,
          rows {t.blob} NOT NULL, digests {t.blob} NOT NULL, seal {t.blob} NOT NULL)""",
        "CREATE INDEX audit_chain_source ON audit_chain (cluster, source, seq)",
        "CREATE INDEX audit_chain_hi ON audit_chain (hi)",  # retention: the links wholly below its mark
        f"""CREATE TABLE audit_chain_breaks (
          id {t.seq}, cluster TEXT NOT NULL, source TEXT NOT NULL, epoch INTEGER NOT NULL,
          first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
          detected {t.real} NOT NULL, resolved {t.real},
          UNIQUE (cluster, source, epoch, first_seq, last_seq, kind))""",
        f"""CREATE TABLE audit_chain_anchor (
          id INTEGER PRIMARY KEY, start_row BIGINT NOT NULL, link_id BIGINT NOT NULL,
          link_seal {t.blob} NOT NULL, pruned_row BIGINT NOT NULL, seal {t.blob} NOT NULL)""",
    ]


# ---- issue 13, replicas (PostgreSQL only): concurrent writers, gap-free readers ----
RESERVE_LOCK_KEY = 0x6B617565  # session advisory lock held only while a writer takes its sequence numbers
WRITE_LOCK_KEY = 0x6B617564  # the lock writers before v4 took exclusively per transaction; v4 takes it shared
RESERVE = f"""CREATE FUNCTION audit_reserve(n BIGINT, top_us BIGINT, OUT first_seq BIGINT, OUT base_us BIGINT)
LANGUAGE plpgsql AS $$
DECLARE seqname TEXT := pg_get_serial_sequence('audit_events', 'seq');
BEGIN
  IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
    RAISE EXCEPTION 'audit_reserve must be the first write of its transaction';
  END IF;
  PERFORM pg_advisory_xact_lock_shared({WRITE_LOCK_KEY});
  PERFORM pg_advisory_lock({RESERVE_LOCK_KEY});
  BEGIN
    PERFORM pg_current_xact_id();
    first_seq := nextval(seqname);
    IF n > 1 THEN PERFORM setval(seqname, first_seq + n - 1); END IF;
    SELECT last_value INTO base_us FROM audit_events_hw;
    IF top_us > base_us THEN PERFORM setval('audit_events_hw', top_us); END IF;
  EXCEPTION WHEN OTHERS THEN
    PERFORM pg_advisory_unlock({RESERVE_LOCK_KEY});
    RAISE;
  END;
  PERFORM pg_advisory_unlock({RESERVE_LOCK_KEY});
END $$"""


def _v4_replicas(t: Types) -> list[str]:
    """Issue 13, replicas: each row keeps the id of the transaction that wrote it (``xid``; NULL for rows
    from before), and ``audit_reserve`` gives a transaction its id and a block of sequence numbers under
    one short lock, so transaction ids and sequence numbers grow together. A reader then shows only rows
    whose ``xid`` is below its snapshot's ``xmin`` (every older transaction has ended): a prefix of the
    sequence that no open transaction can commit into. ``audit_events_hw`` carries the running maximum of
    ``ts`` (in microseconds, rounded up) from one reservation to the next, so ``hw`` stays non-decreasing.
    The column default covers writers from before v4 (they serialise on WRITE_LOCK_KEY). No new table for
    the totals: each replica adds its inserts to its own row of ``audit_totals`` (any id but 1, which
    retention and SQLite use), the rows are summed on read and folded into row 1 by the next setup."""
    if t is not POSTGRES:
        return []
    return [
        "ALTER TABLE audit_events ADD COLUMN xid xid8",  # no default here: existing rows are not rewritten
        "ALTER TABLE audit_events ALTER COLUMN xid SET DEFAULT pg_current_xact_id()",
        "CREATE SEQUENCE audit_events_hw MINVALUE 0 START 0",
        "SELECT setval('audit_events_hw', GREATEST(0, COALESCE(CEIL((SELECT hw FROM audit_events "
        "ORDER BY seq DESC LIMIT 1) * 1e6)::BIGINT + 1, 0)))",
        RESERVE,
    ]


def _to_v4(t: Types) -> list[str]:
    return [*_v4_identity(t), *_v4_sources(t), *_v4_chain(t), *_v4_replicas(t)]


MIGRATIONS = {2: _to_v2, 3: _to_v3, 4: _to_v4}  # version -> the statements that lead to it from the one before


def plan(current: int, t: Types) -> list[str]:
    """The statements that bring a database at version ``current`` (0 = empty) to VERSION."""
    if current == 0:
        steps = create(t)
    else:
        steps = [s for version in range(current + 1, VERSION + 1) for s in MIGRATIONS[version](t)]
    if current < VERSION:
        steps.append("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
        steps += [f"INSERT INTO schema_version (version) VALUES ({v}) ON CONFLICT (version) DO NOTHING"
                  for v in range(max(current, 1), VERSION + 1)]
    return steps
