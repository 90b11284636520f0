"""Every metric and log event name of the tailer, declared in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        self.configmap_trimmed = Counter("tailer_configmap_trimmed_entries", "Oldest entries moved out of a full ConfigMap",
                                         registry=r)
        # audit store and API
        self.store_inserted = Counter("tailer_store_events_inserted", "Audit events committed to the store", registry=r)
        self.store_duplicates = Counter("tailer_store_duplicates", "Redelivered events dropped by (auditID, stage)",
                                        registry=r)
        self.store_skipped = Counter("tailer_store_skipped", "Records without auditID or stage, not stored", registry=r)
        self.store_commit = Histogram("tailer_store_commit_seconds", "Time to commit one chunk to the store", registry=r)
        self.store_pruned = Counter("tailer_store_pruned", "Events deleted by retention", ["reason"], registry=r)
        self.api_requests = Counter("tailer_api_requests", "Audit API requests", ["route", "code"], registry=r)
        self.watchers = Gauge("tailer_api_watchers", "Open watch streams", registry=r)
        self.watchers_cut_off = Counter("tailer_api_watchers_cut_off", "Watch streams closed for reading too slowly",
                                        registry=r)
        self.watchers_expired = Counter("tailer_api_watchers_expired",
                                        "Watch streams ended (410) because retention deleted events they had not read",
                                        registry=r)
