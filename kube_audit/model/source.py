"""Where events come from: a forwarder's identity and the status records it sends in-band (issue 12).
Shared by the forwarder (which builds them) and the tailer (which reads them). Pure: no I/O.

Identity. Every chunk a kube-audit forwarder sends carries the option ``OPTION`` (a map, see
``kube_audit.model.chain`` for the chain fields in it)::

    {"source": "<--source-name>", "cluster": "<--cluster>", "seq": n, "prev": <32 bytes>, "mac": <32 bytes>}

A peer that does not send it (a stock Fluent Bit out_forward) is known by the hostname of its PING
(shared-key auth), else by its tag; its cluster is "".

Status. On the tag ``STATUS_TAG`` the forwarder sends one record per chunk, at least every 10 s and at
once on a change, chunked and acked like events (never on the events' tag: the tailer routes it to the
sources stage, never to stdout, the store's events or ConfigMaps)::

    {"kind": "ForwarderStatus", "source", "cluster", "version", "startTime", "time",
     "file", "inode", "offset", "lagBytes", "rotations",
     "events": {"read", "sent", "acked"}, "badLines": {"<kind>": count, ...},
     "gaps": [{"id", "file", "inode", "bytes", "exact", "from", "to", "reason"}, ...]}

Times are RFC 3339 strings (``from``/``to``: the time range of the lost events where known, else null).
``gaps`` holds only gaps not yet acked in an earlier status record: each gap is sent until a status
chunk holding it is acked, and the forwarder checkpoints the ids it reported, so the tailer sees each
gap once even across restarts (it also ignores an ``id`` it already has).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OPTION = "kube_audit"  # the forward-protocol option key holding identity and chain
STATUS_TAG = "kube-audit-forwarder.status"
STATUS_KIND = "ForwarderStatus"
STATES = ("ok", "lagging", "silent", "gap")  # a source's state as the tailer serves it
GAP_REASONS = ("rotated_unread", "truncated", "pruned_while_down", "bad_lines", "chain_break", "unknown")
MAX_NAME = 253  # a DNS-1123 subdomain's length: names and clusters longer than this are refused


@dataclass(frozen=True, slots=True, order=True)
class SourceId:
    cluster: str
    name: str

    def __str__(self) -> str:
        return f"{self.cluster}/{self.name}" if self.cluster else self.name


@dataclass(frozen=True, slots=True)
class GapReport:
    id: str  # stable across restarts (the forwarder's fingerprint of the gap)
    file: str
    inode: int
    bytes: int
    reason: str
    exact: bool = True  # False: ``bytes`` is a lower bound
    start: str | None = None  # "from": the first lost event's time, where known
    end: str | None = None  # "to"

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "file": self.file, "inode": self.inode, "bytes": self.bytes, "exact": self.exact,
                "from": self.start, "to": self.end, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Status:
    source: SourceId
    version: str
    start_time: str
    time: str
    file: str = ""
    inode: int = 0
    offset: int = 0
    lag_bytes: int = 0
    rotations: int = 0
    read: int = 0
    sent: int = 0
    acked: int = 0
    bad_lines: dict[str, int] = field(default_factory=dict)
    gaps: tuple[GapReport, ...] = ()

    def to_record(self) -> dict[str, Any]:
        return {"kind": STATUS_KIND, "source": self.source.name, "cluster": self.source.cluster,
                "version": self.version, "startTime": self.start_time, "time": self.time,
                "file": self.file, "inode": self.inode, "offset": self.offset, "lagBytes": self.lag_bytes,
                "rotations": self.rotations, "events": {"read": self.read, "sent": self.sent, "acked": self.acked},
                "badLines": dict(self.bad_lines), "gaps": [g.to_record() for g in self.gaps]}


class BadStatus(ValueError):
    """A status record that does not follow the format above (the tailer counts and logs it)."""


def _str(record: dict[str, Any], key: str, default: str | None = None, limit: int = 4096) -> str:
    value = record.get(key, default)
    if not isinstance(value, str) or len(value) > limit:
        raise BadStatus(f"{key}: expected a string of at most {limit} characters")
    return value


def _int(record: Any, key: str) -> int:
    value = record.get(key, 0) if isinstance(record, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadStatus(f"{key}: expected a non-negative integer")
    return value


def _gap(raw: Any) -> GapReport:
    if not isinstance(raw, dict):
        raise BadStatus("gaps: expected a list of maps")
    times = [raw.get(k) for k in ("from", "to")]
    if any(t is not None and not isinstance(t, str) for t in times):
        raise BadStatus("gaps: from/to must be strings or null")
    reason = raw.get("reason")
    return GapReport(_str(raw, "id", limit=256), _str(raw, "file", ""), _int(raw, "inode"), _int(raw, "bytes"),
                     reason if reason in GAP_REASONS else "unknown", raw.get("exact", True) is not False,
                     times[0], times[1])


def parse_status(record: Any) -> Status:
    """The status record the forwarder sent, validated; raises BadStatus."""
    if not isinstance(record, dict) or record.get("kind") != STATUS_KIND:
        raise BadStatus(f"expected a map with kind {STATUS_KIND}")
    source = SourceId(_str(record, "cluster", "", MAX_NAME), _str(record, "source", limit=MAX_NAME))
    if not source.name:
        raise BadStatus("source: must not be empty")
    events, bad, gaps = record.get("events", {}), record.get("badLines", {}), record.get("gaps", [])
    if not isinstance(bad, dict) or not all(isinstance(k, str) for k in bad):
        raise BadStatus("badLines: expected a map of counts")
    if not isinstance(gaps, list) or len(gaps) > 1000:
        raise BadStatus("gaps: expected a list of at most 1000 gaps")
    return Status(source, _str(record, "version", ""), _str(record, "startTime", ""), _str(record, "time", ""),
                  _str(record, "file", ""), _int(record, "inode"), _int(record, "offset"), _int(record, "lagBytes"),
                  _int(record, "rotations"), _int(events, "read"), _int(events, "sent"), _int(events, "acked"),
                  {k: _int(bad, k) for k in bad}, tuple(_gap(g) for g in gaps))


def identity(option: Any, ping_hostname: str = "", tag: str = "") -> SourceId:
    """Who sent a chunk: the ``OPTION`` map of a kube-audit forwarder, else the PING's hostname, else the
    tag (a peer that authenticates nothing and names nothing). Never raises: a bad option falls back."""
    if isinstance(option, dict):
        name, cluster = option.get("source"), option.get("cluster", "")
        if isinstance(name, str) and name and len(name) <= MAX_NAME and isinstance(cluster, str) \
                and len(cluster) <= MAX_NAME:
            return SourceId(cluster, name)
    return SourceId("", ping_hostname[:MAX_NAME] or tag[:MAX_NAME])
