"""What the store keeps of an event, and how a query asks for events. Pure: no database here.

A row is the columns the API filters on plus the redacted event as compact JSON, compressed with zstd
(one frame per row: a row must stay readable alone, and a page-level scheme would need our own page
format). Bodies that start with ``{`` are plain JSON (rows written before compression, or with it off).
"""

from __future__ import annotations

import builtins
import json
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson
import zstandard

from kube_audit.model.audit import AuditEvent, is_dry_run, parse

ZSTD_LEVEL = 3  # ~3x on a 1.5 KB event at ~5 µs; higher levels buy little on rows this small
_local = threading.local()  # zstd (de)compressors are not thread-safe: one per thread


class Row(NamedTuple):
    audit_id: str
    stage: str
    ts: float
    verb: str
    level: str
    username: str
    api_group: str
    resource: str
    namespace: str
    name: str
    subresource: str
    code: int | None
    dry: int  # 1 for a ?dryRun request: it changed nothing
    bytes: int  # length of the event's JSON (what --retention-bytes counts), not of the stored body
    event: builtins.bytes  # the JSON, still uncompressed: the writer compresses (off the event loop)


COLUMNS = Row._fields


@dataclass(frozen=True)
class EventFilter:
    namespace: str | None = None
    user: str | None = None
    verb: str | None = None
    resource: str | None = None
    group: str | None = None  # None = any group
    name: str | None = None
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive
    level: str | None = None
    code: int | None = None

    def where(self, ph: str) -> tuple[list[str], list[Any]]:
        """SQL conditions with ``ph`` as the driver's placeholder, and their arguments."""
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("namespace", self.namespace), ("username", self.user), ("verb", self.verb),
                              ("resource", self.resource), ("api_group", self.group), ("name", self.name),
                              ("level", self.level), ("code", self.code)):
            if value is not None:
                clauses.append(f"{column} = {ph}")
                args.append(clean(value) if isinstance(value, str) else value)
        if self.since is not None:
            clauses.append(f"ts >= {ph}")
            args.append(self.since)
        if self.until is not None:
            clauses.append(f"ts < {ph}")
            args.append(self.until)
        return clauses, args


@dataclass(frozen=True)
class InsertResult:
    inserted: int
    duplicates: int
    skipped: int  # records that are not audit events (no auditID or stage)


def parse_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def clean(text: str) -> str:
    """A column value every database takes: PostgreSQL refuses NUL in text and both refuse lone
    surrogates; such a chunk would be refused on every resend. The JSON body keeps the exact value."""
    if text.isascii() and "\x00" not in text:
        return text
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def to_row(record: Any, now: float) -> Row | None:
    """The row of an audit event, parsed once by the pipeline (kube_audit/model/audit.py); a raw record
    is parsed here. None for a record that is not an audit event."""
    ev = record if isinstance(record, AuditEvent) else parse(record)
    if not isinstance(ev, AuditEvent):
        return None
    v = ev.view
    body = ev.json
    code = v.code if v.code is not None and -(2**63) <= v.code < 2**63 else None  # the column is 64-bit
    return Row(clean(v.audit_id), clean(v.stage), ev.ts or now, clean(v.verb), clean(v.level), clean(v.user),
               clean(v.group), clean(v.resource), clean(v.namespace), clean(v.name), clean(v.subresource), code,
               int(is_dry_run(ev.body)), len(body), body)


def compress(body: bytes) -> bytes:
    c = getattr(_local, "c", None)
    if c is None:
        c = _local.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    return c.compress(body)


def load(body: bytes | str) -> dict[str, Any]:
    """The event of a stored body (zstd frame or plain JSON)."""
    if not (isinstance(body, str) or body[:1] == b"{"):
        d = getattr(_local, "d", None)
        if d is None:
            d = _local.d = zstandard.ZstdDecompressor()
        body = d.decompress(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:  # lone surrogates, escaped by encode_line's fallback
        return json.loads(bytes(body) if not isinstance(body, str) else body)
