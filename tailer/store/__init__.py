"""The audit store: SQLite (one file, WAL) or PostgreSQL (shared by several tailer replicas).

Two drivers behind one class (``Store``, in base.py; ``Store.open`` picks sqlite.py or postgres.py by
the target), a versioned schema (schema.py), retention (retention.py) and the ingest sink (sink.py).

One table, ``audit_events``: ``seq`` (the store sequence, also the API's resourceVersion), the columns the
API filters on, and the redacted event as zstd-compressed JSON. Inserts are idempotent on
(audit_id, stage). Retention records the highest sequence it ever deleted in ``audit_pruned`` (in the
same transaction as the delete): a watcher that resumes from below it may have missed an event and is
told so (410 Expired) instead of skipping it.
"""

from tailer.store.base import Store, StoreError
from tailer.store.rows import EventFilter, InsertResult, parse_time, to_row

__all__ = ["EventFilter", "InsertResult", "Store", "StoreError", "parse_time", "to_row"]
