"""Every metric and log event name of the tailer, declared in one place."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric


def is_api_family(name: str) -> bool:
    """The families the API serves (tailer_api_*), which its own process counts (tailer/apiproc.py)."""
    return name.startswith("tailer_api_") and not name.startswith("tailer_api_process_")


class Families:
    """Part of a registry, for ``generate_latest``: the metric families ``keep`` says yes to."""

    def __init__(self, registry: CollectorRegistry, keep: Callable[[str], bool]) -> None:
        self.registry, self.keep = registry, keep

    def collect(self) -> Iterator[Metric]:
        return (m for m in self.registry.collect() if self.keep(m.name))


class TailerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("tailer_events_received", "Audit events received", registry=r)
        self.bytes = Counter("tailer_bytes_received", "Bytes of forward-protocol messages received", registry=r)
        self.chunks = Counter("tailer_chunks_received", "Event-carrying messages received", ["mode"], registry=r)
        self.acks = Counter("tailer_acks_sent", "Acks sent after the sinks had the chunk", registry=r)
        self.bad_frames = Counter("tailer_bad_frames", "Connections closed for malformed input", ["reason"], registry=r)
        self.auth_failures = Counter("tailer_auth_failures", "Failed TLS or shared-key handshakes", ["reason"], registry=r)
        self.connections = Counter("tailer_connections", "Connections accepted", registry=r)
        self.open_connections = Gauge("tailer_connections_open", "Connections open now", registry=r)
        self.connections_refused = Counter("tailer_connections_refused", "Connections closed at once (tailer full)",
                                           ["reason"], registry=r)
        self.idle_closed = Counter("tailer_connections_idle_closed", "Connections closed after --idle-timeout",
                                   registry=r)
        self.unencodable = Counter("tailer_records_unencodable", "Records that needed the slow JSON fallback", registry=r)
        self.records_rejected = Counter("tailer_records_rejected", "Records that can never be stored as audit "
                                        "events: acked, kept raw on stdout and in the rejected-records file",
                                        ["reason"], registry=r)
        self.rejected_file_errors = Counter("tailer_rejected_file_errors", "Rejected records not written to the "
                                            "rejected-records file", ["reason"], registry=r)
        self.sink_errors = Counter("tailer_sink_errors", "Chunks a sink failed to take (not acked)", ["sink"], registry=r)
        # audit ConfigMaps (tailer/configmaps/writer.py)
        self.configmap_writes = Counter("tailer_configmap_writes", "ConfigMap writes by result", ["result"], registry=r)
        self.configmap_pending = Gauge("tailer_configmap_pending_entries", "Entries waiting for their ConfigMap", registry=r)
        self.configmap_dropped = Counter("tailer_configmap_dropped_entries", "Entries that never reached a ConfigMap",
                                         ["reason"], registry=r)
        self.configmap_cursor = Gauge("tailer_configmap_cursor", "Store sequence up to which every entry is in its "
                                      "ConfigMap (the projection's durable cursor)", registry=r)
        self.configmap_trimmed = Counter("tailer_configmap_trimmed_entries", "Oldest entries moved out of a full ConfigMap",
                                         registry=r)
        # audit store and API
        self.store_inserted = Counter("tailer_store_events_inserted", "Audit events committed to the store", registry=r)
        self.store_duplicates = Counter("tailer_store_duplicates", "Redelivered events dropped by (auditID, stage)",
                                        registry=r)
        self.store_skipped = Counter("tailer_store_skipped", "Records without auditID or stage, not stored", registry=r)
        self.store_commit = Histogram("tailer_store_commit_seconds", "Time to commit one chunk to the store", registry=r)
        self.store_pruned = Counter("tailer_store_pruned", "Events deleted by retention", ["reason"], registry=r)
        self.store_healthy = Gauge("tailer_store_healthy", "1 while the store takes writes, 0 while it refuses them "
                                   "(/readyz answers 503)", registry=r)
        self.api_requests = Counter("tailer_api_requests", "Audit API requests", ["route", "code"], registry=r)
        self.watchers = Gauge("tailer_api_watchers", "Open watch streams", registry=r)
        self.watchers_refused = Counter("tailer_api_watchers_refused", "Watch requests refused (429) because "
                                        "--watch-max watches were open", registry=r)
        self.watchers_behind = Counter("tailer_api_watchers_behind", "Times an open watch fell behind the watch "
                                       "ring and read the store to catch up", registry=r)
        self.watchers_waiting = Gauge("tailer_api_watchers_waiting", "Open watches behind the watch ring waiting "
                                      "their turn to read the store (a few read it at once)", registry=r)
        self.watch_ring_events = Gauge("tailer_api_watch_ring_events", "Committed events held in the watch ring",
                                       registry=r)
        self.watch_ring_bytes = Gauge("tailer_api_watch_ring_bytes", "Bytes held in the watch ring (JSON, encoded "
                                      "lines and an estimate of the objects)", registry=r)
        self.watchers_cut_off = Counter("tailer_api_watchers_cut_off", "Watch streams closed for reading too slowly",
                                        registry=r)
        self.watchers_expired = Counter("tailer_api_watchers_expired",
                                        "Watch streams ended (410) because retention deleted events they had not read",
                                        registry=r)
        self.watchers_revoked = Counter("tailer_api_watchers_revoked",
                                        "Watch streams ended (403) because their authorization was revoked", registry=r)
        self.api_errors = Counter("tailer_api_errors", "API requests that failed on our side", ["route", "reason"],
                                  registry=r)
        self.api_query_seconds = Histogram("tailer_api_query_seconds", "Time to compute one object view in the "
                                           "query pool", buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60),
                                           registry=r)
        self.api_query_rejected = Counter("tailer_api_queries_rejected", "Object views refused or abandoned",
                                          ["reason"], registry=r)
        self.api_process_restarts = Counter("tailer_api_process_restarts", "Times the API's own process "
                                            "exited and was started again (--api-process)", registry=r)
        self.api_token_file_errors = Counter("tailer_api_token_file_errors", "Times the API token file became "
                                             "unusable (every request refused until it is valid)", ["reason"],
                                             registry=r)
        # sources (tailer/sources/): ``source`` is "cluster/name", or the name alone when the cluster is ""
        self.source_last_seen = Gauge("tailer_source_last_seen_timestamp_seconds", "When anything (a status "
                                      "record or events) last came from the source, Unix time", ["source"],
                                      registry=r)
        self.source_lag = Gauge("tailer_source_lag_bytes", "Bytes of audit log the source had not read yet, as "
                                "its last status record said", ["source"], registry=r)
        self.source_gap_bytes = Counter("tailer_source_gap_bytes", "Bytes of audit log the source reported lost "
                                        "(each gap counted once)", ["source"], registry=r)
        self.source_gaps = Counter("tailer_source_gaps", "Gaps the source reported or the tailer found (each "
                                   "counted once)", ["source", "reason"], registry=r)
        self.source_bad_lines = Counter("tailer_source_bad_lines", "Audit log lines the source skipped as bad, "
                                        "by kind", ["source", "kind"], registry=r)
        # the chunk chain (tailer/chain)
        self.chain_chunks = Counter("tailer_chain_chunks", "Chunks stored, by how their chain link relates to the "
                                    "stored ones", ["outcome"], registry=r)
        self.chain_breaks = Counter("tailer_chain_breaks", "Breaks of a forwarder's chunk chain (a gap of that "
                                    "source, reason chain_break)", ["kind"], registry=r)
