"""The audit API's contract, shared by the tailer (server side) and ``kubectl audit`` (client side):
the API group and version, the paths, the kinds of the answers, the tracking annotation and the audit
ConfigMap entry format. Pure: no I/O, no third-party imports."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

API_GROUP = "audit.kube-audit-forwarder.io"
API_VERSION = f"{API_GROUP}/v1alpha1"
PREFIX = f"/apis/{API_VERSION}"

# Paths below PREFIX. Events: list (?limit&continue) or watch (?watch=true&resourceVersion), filters
# namespace, user, verb, resource, name, since, until, level, code, cluster, source. Object views: ?limit,
# ?cluster&source, and spechistory ?field, diff ?start&end&field, bisect ?field&value. An object view is
# one cluster's history: with events of the object from several clusters and no ?cluster it answers 409
# (reason Conflict, the clusters listed); ``cluster=`` (empty) is the unnamed cluster.
EVENTS = "events"
VIEWS = ("versions", "spechistory", "diff", "bisect")
KIND_EVENT_LIST = "AuditEventList"
KIND_VERSIONS = "ObjectVersionList"
KIND_FIELD_HISTORY = "FieldHistory"
KIND_DIFF = "ObjectDiff"
KIND_BISECT = "BisectResult"
# Sources (issue 12, cluster-scoped): SOURCES lists every forwarder the tailer heard from (?cluster=C: only
# that cluster's), SOURCES/{name} one of them; the same name in two clusters is addressed with ?cluster=C
# (without it: 409 when the name is ambiguous, 404 when unknown). Items: kind KIND_SOURCE, fields name,
# cluster, state (ok|lagging|silent|gap), lastSeen, lastEventTime, lagBytes, gapBytes, gaps (id, file,
# inode, bytes, exact, from, to, reason, reported), badLines, status (the last status record's rest).
# Lists and object views whose time range crosses a known gap carry a ``Warning: 299 - "..."`` header.
SOURCES = "sources"
KIND_SOURCE = "Source"
KIND_SOURCE_LIST = "SourceList"
VERIFY = "verify"  # GET PREFIX/verify?source&cluster&since: the chunk chain and the stored events re-checked
KIND_VERIFY = "ChainVerification"
# a verification: clean, checked {links, rows}, scope, problems [{kind: altered|deleted|inserted|linkAltered|
# linkMissing|anchor, message, link, cluster, source, seq, row, auditID}], breaks [{link, cluster, source,
# epoch, seq, kind: missing|bad_mac|restarted}]
# a version: version, resourceVersion, auditID, time, user, verb, subresource, code, complete, deleted,
# object, change (kube_audit/model/change.py), and patch, patchType for a patch, reason when incomplete

ANNOTATION = f"{API_GROUP}/configmap"  # on a tracked object: the name of its audit ConfigMap
FLUENT_ANNOTATION = f"{API_GROUP}/fluent-metadata"  # on an event item: JSON {"tag", "metadata"} it came with
SOURCE_ANNOTATION = f"{API_GROUP}/source"  # on an event item: the forwarder it came from (--source-name)
CLUSTER_ANNOTATION = f"{API_GROUP}/cluster"  # on an event item: that forwarder's --cluster ("" = none)
DATA_KEY = "entries.json"  # the ConfigMap key holding the entries, a JSON array, oldest first
MANAGED_BY = {"app.kubernetes.io/managed-by": "kube-audit-tailer"}
# One entry: {"time", "user", "groups", "verb", "subresource", "auditID", "code", "change"}
ENTRY_FIELDS = ("time", "user", "groups", "verb", "subresource", "auditID", "code", "change")


def events_path(namespace: str | None = None) -> str:
    return f"{PREFIX}/namespaces/{namespace}/{EVENTS}" if namespace else f"{PREFIX}/{EVENTS}"


def object_path(resource: str, name: str, view: str, namespace: str = "") -> str:
    """An object view; ``resource`` is a plural, optionally ``plural.group``; no namespace: cluster-scoped."""
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"{PREFIX}{where}/{resource}/{name}/{view}"


def sources_path(name: str = "") -> str:
    return f"{PREFIX}/{SOURCES}/{name}" if name else f"{PREFIX}/{SOURCES}"


def dumps_entry(entry: dict[str, Any]) -> str:
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False)


def encode_entries(entries: Sequence[dict[str, Any]]) -> str:
    """One entry a line, so that ``kubectl get configmap -o yaml`` stays readable."""
    return "[\n" + ",\n".join(dumps_entry(e) for e in entries) + "\n]" if entries else "[]"


def decode_entries(configmap: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries of a ConfigMap; a missing or unreadable value reads as none."""
    try:
        value = json.loads((configmap.get("data") or {}).get(DATA_KEY) or "[]")
    except ValueError:
        return []
    return [e for e in value if isinstance(e, dict) and e.get("auditID")] if isinstance(value, list) else []
