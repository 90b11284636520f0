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
    """Issue 12, identity: which source and cluster each event came from (owned by the store's rows)."""
    return []


def _v4_sources(t: Types) -> list[str]:
    """Issue 12, sources: one record per source, its gaps (owned by tailer/sources)."""
    return []


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


def _to_v4(t: Types) -> list[str]:
    return [*_v4_identity(t), *_v4_sources(t), *_v4_chain(t)]


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
