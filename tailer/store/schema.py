"""The store's schema, versioned. ``schema_version`` holds every version applied; a database from before
versioning (it has ``audit_events`` but no ``schema_version``) is version 1. A new database gets the
newest layout at once; an older one runs each migration after its version, in one transaction.

Version 2: ``hw`` (the highest ``ts`` stored at or below this row's ``seq``: non-decreasing in ``seq``,
so a time bound becomes a ``seq`` bound by bisection and the ``ts`` index goes), a running row and byte
total (retention reads it instead of ``SUM(bytes)``), cursors of store followers, bodies as bytes (zstd).
Version 3: ``audit_dicts``, the zstd dictionaries of the bodies.
"""

from __future__ import annotations

from dataclasses import dataclass

VERSION = 3


@dataclass(frozen=True)
class Types:
    seq: str  # the sequence column, assigned by the database
    real: str
    blob: str
    uri: str  # the requestURI of a JSON text body (to migrate version 1)


SQLITE = Types(seq="INTEGER PRIMARY KEY AUTOINCREMENT", real="REAL", blob="BLOB",
               uri="json_extract(event, '$.requestURI')")
POSTGRES = Types(seq="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", real="DOUBLE PRECISION", blob="BYTEA",
                 uri="substring(event from '\"requestURI\":\"[^\"]*')")

INDEXES = [
    "CREATE INDEX IF NOT EXISTS audit_events_object ON audit_events (resource, namespace, name, seq)",
    "CREATE INDEX IF NOT EXISTS audit_events_namespace ON audit_events (namespace, seq)",
    "CREATE INDEX IF NOT EXISTS audit_events_user ON audit_events (username, seq)",
]


def _support(t: Types) -> list[str]:
    return [
        "CREATE TABLE IF NOT EXISTS audit_pruned (id INTEGER PRIMARY KEY, max_seq BIGINT NOT NULL)",
        "INSERT INTO audit_pruned (id, max_seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
        "CREATE TABLE IF NOT EXISTS audit_cursors (name TEXT PRIMARY KEY, seq BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS audit_totals (id INTEGER PRIMARY KEY, rows BIGINT NOT NULL, bytes BIGINT NOT NULL)",
    ]


def _to_v3(t: Types) -> list[str]:
    return [f"CREATE TABLE IF NOT EXISTS audit_dicts (id INTEGER PRIMARY KEY, data {t.blob} NOT NULL)"]


def create(t: Types) -> list[str]:
    """The newest layout, for an empty database."""
    return [
        f"""CREATE TABLE audit_events (
          seq {t.seq}, hw {t.real} NOT NULL,
          audit_id TEXT NOT NULL, stage TEXT NOT NULL, ts {t.real} NOT NULL,
          verb TEXT NOT NULL, level TEXT NOT NULL, username TEXT NOT NULL,
          api_group TEXT NOT NULL, resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
          subresource TEXT NOT NULL, code BIGINT, dry SMALLINT NOT NULL, bytes INTEGER NOT NULL,
          event {t.blob} NOT NULL,
          UNIQUE (audit_id, stage))""",
        *INDEXES, *_support(t),
        "INSERT INTO audit_totals (id, rows, bytes) VALUES (1, 0, 0)",
        *_to_v3(t),
    ]


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
        *INDEXES,
        "CREATE INDEX IF NOT EXISTS audit_events_ts ON audit_events (ts)",
        "CREATE TABLE IF NOT EXISTS audit_pruned (id INTEGER PRIMARY KEY, max_seq BIGINT NOT NULL)",
        "INSERT INTO audit_pruned (id, max_seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    ]


def _to_v2(t: Types) -> list[str]:
    steps = [
        f"ALTER TABLE audit_events ADD COLUMN hw {t.real} NOT NULL DEFAULT 0",
        "UPDATE audit_events SET hw = m.hw FROM (SELECT seq, MAX(ts) OVER (ORDER BY seq) AS hw FROM audit_events) "
        "AS m WHERE m.seq = audit_events.seq",
        "DROP INDEX IF EXISTS audit_events_ts",
        "ALTER TABLE audit_events ADD COLUMN dry SMALLINT NOT NULL DEFAULT 0",
        f"UPDATE audit_events SET dry = 1 WHERE {t.uri} LIKE '%dryRun=%'",
        *_support(t),
        "INSERT INTO audit_totals (id, rows, bytes) SELECT 1, COUNT(*), COALESCE(SUM(bytes), 0) FROM audit_events",
    ]
    if t is POSTGRES:
        steps += ["ALTER TABLE audit_events ALTER COLUMN event TYPE BYTEA USING convert_to(event, 'UTF8')",
                  "ALTER TABLE audit_events ALTER COLUMN code TYPE BIGINT"]
    return steps


MIGRATIONS = {2: _to_v2, 3: _to_v3}  # version -> the statements that lead to it from the one before


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
