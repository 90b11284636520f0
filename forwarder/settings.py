"""The forwarder's one configuration object, built once by cli.py."""

from __future__ import annotations

from dataclasses import dataclass

from kube_audit.model.source import SourceId
from kube_audit.runtime.tls import TLSFiles

from .transport import Route


@dataclass(frozen=True)
class FollowSettings:
    audit_log_path: str = "/var/log/audit/audit.log"
    position_file: str = "/var/log/audit/audit-forwarder.pos"
    read_from_head: bool = False  # without a checkpoint: take all that is there, not just new lines
    max_event_bytes: int = 16 * 1024 * 1024  # longer lines are skipped and reported
    max_held_files: int = 16  # descriptors held; other unread files are closed and re-opened by content
    stat_interval: float = 1.0  # seconds between stat checks when no file event arrives
    dead_letter_file: str | None = None  # bad lines are appended here (JSON lines) when set


@dataclass(frozen=True)
class BatchSettings:
    tag: str = "audit"
    chunk_events: int = 1000
    chunk_bytes: int = 1024 * 1024  # before compression
    flush_interval: float = 0.2  # seconds a partial chunk may wait
    compress: bool = True  # gzip (CompressedPackedForward)


@dataclass(frozen=True)
class ClientSettings:
    route: Route  # with tailer_service: the Service's DNS name and port 0 until looked up
    tailer_service: tuple[str, str] | None = None  # (namespace, name): look the tailer up per connection
    kubeconfig: str | None = None  # for tailer_service; None: in-cluster
    tls: TLSFiles | None = None  # TLS to the tailer (inside the tunnel when proxied)
    proxy_tls: TLSFiles | None = None  # mutual TLS to an http-connect proxy
    shared_key: str | None = None
    username: str = ""
    password: str = ""
    hostname: str = "kube-audit-forwarder"
    max_inflight_chunks: int = 8
    ack_timeout: float = 30.0  # seconds for the oldest chunk's ack before reconnecting
    backoff_initial: float = 0.2  # seconds; doubles per failure, jittered
    backoff_max: float = 30.0


@dataclass(frozen=True)
class Settings:
    follow: FollowSettings
    batch: BatchSettings
    client: ClientSettings
    source: SourceId = SourceId("", "kube-audit-forwarder")  # --cluster, --source-name: who we are to the tailer
    integrity_key: bytes | None = None  # chains chunks (--integrity-key-file, else the shared key); None: off
    status_interval: float = 10.0  # seconds between status records; 0: none
    http_host: str = "0.0.0.0"
    http_port: int = 9880
    shutdown_timeout: float = 10.0  # seconds to get the last acks on SIGTERM
    log_level: str = "info"
