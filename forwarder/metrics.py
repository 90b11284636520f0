"""Every metric of the forwarder, declared in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ForwarderMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.events_read = Counter("forwarder_events_read", "Audit events read from the log files", registry=r)
        self.bytes_read = Counter("forwarder_bytes_read", "Bytes read from the log files", registry=r)
        self.events_sent = Counter("forwarder_events_sent", "Events put into chunks for the tailer", registry=r)
        self.events_acked = Counter("forwarder_events_acked", "Events acked by the tailer", registry=r)
        self.chunks_sent = Counter("forwarder_chunks_sent", "Chunk sends, resends included", registry=r)
        self.chunks_acked = Counter("forwarder_chunks_acked", "Chunks acked by the tailer", registry=r)
        self.bytes_sent = Counter("forwarder_bytes_sent", "Forward-protocol bytes written", registry=r)
        self.bad_lines = Counter("forwarder_bad_lines", "Lines skipped as not an audit event", ["kind"], registry=r)
        self.gaps = Counter("forwarder_gaps", "Files lost before they were read", registry=r)
        self.gap_bytes = Counter("forwarder_gap_bytes", "Bytes lost in gaps (where known)", registry=r)
        self.reconnects = Counter("forwarder_reconnects", "Failed connections or sessions, retried", registry=r)
        self.inflight = Gauge("forwarder_inflight_chunks", "Chunks sent or queued and not yet acked", registry=r)
        self.lag_bytes = Gauge("forwarder_lag_bytes", "Unread bytes in the files being followed", registry=r)
        self.connected = Gauge("forwarder_connected", "1 while a session with the tailer is up", registry=r)
        self.checkpoint_errors = Counter("forwarder_checkpoint_errors", "Checkpoint writes that failed", registry=r)
        self.dead_letter_errors = Counter("forwarder_dead_letter_errors", "Dead-letter writes that failed",
                                          registry=r)
        self.rotations = Gauge("forwarder_rotations", "Rotations of the live file seen since start", registry=r)
        self.truncations = Gauge("forwarder_truncations", "Truncations (copytruncate) of the live file seen",
                                 registry=r)
        self.folder_missing = Gauge("forwarder_audit_log_folder_missing", "1 while the --audit-log-path folder "
                                    "does not exist", registry=r)
        self.tamper_evidence = Gauge("forwarder_tamper_evidence", "1 when chunks are chained (a key is set), "
                                     "0 when tamper evidence is off", registry=r)
        self.checkpoint_offset = Gauge("forwarder_checkpoint_offset", "Offset in the checkpointed file", registry=r)
