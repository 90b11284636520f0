"""Who may connect, and how much they may make the tailer hold.

- A cap on open connections: beyond it a new connection is closed at once, counted
  (``tailer_connections_refused_total{reason="max_connections"}``), and logged once per burst (one line
  when refusing starts, one with the count when a connection is accepted again).
- A memory budget for partial messages across all connections: the read that takes the total over it
  closes its connection (``tailer_bad_frames_total{reason="memory_budget"}``); the sender retries later,
  so the tailer pushes back instead of growing.
"""

from __future__ import annotations

import resource

from kube_audit.runtime.observability import get_logger
from tailer.metrics import TailerMetrics

log = get_logger(component="forward_server")
SPARE_FILES = 128  # descriptors kept for the HTTP port, the store, logs


class Admission:
    def __init__(self, max_connections: int, max_buffered_bytes: int, metrics: TailerMetrics) -> None:
        self.max_connections = max_connections
        self.max_buffered_bytes = max_buffered_bytes
        self.metrics = metrics
        self.open = 0
        self.buffered = 0  # bytes of partial messages held by all connections
        self._refused_in_burst = 0

    def raise_file_limit(self) -> None:
        """Make room for max_connections under the open-file limit, or say that there is none."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = self.max_connections + SPARE_FILES
        if soft >= want:
            return
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
        if target < want:
            log.warning("open_file_limit_low", max_connections=self.max_connections, open_file_limit=target,
                        hint="raise the limit (ulimit -n) or lower --max-connections")

    def admit(self, peer: str) -> bool:
        if self.open >= self.max_connections:
            self.metrics.connections_refused.labels("max_connections").inc()
            if self._refused_in_burst == 0:
                log.warning("connections_refused", reason="max_connections", limit=self.max_connections, peer=peer)
            self._refused_in_burst += 1
            return False
        if self._refused_in_burst:
            log.info("connections_accepted_again", refused=self._refused_in_burst)
            self._refused_in_burst = 0
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def hold(self, before: int, after: int) -> bool:
        """A connection's partial bytes went from ``before`` to ``after``; False when over the budget."""
        if after > before and self.buffered + after - before > self.max_buffered_bytes:
            return False  # (the caller closes the connection and releases ``before``)
        self.buffered += after - before
        return True
