"""The tailer's one configuration object, built once by cli.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from kube_audit.runtime.tls import TLSFiles


@dataclass(frozen=True)
class ForwardSettings:
    host: str = "0.0.0.0"
    port: int = 24224
    tls: TLSFiles | None = None  # server certificate and key; ``ca`` verifies clients
    verify_client: bool = False  # require a client certificate signed by tls.ca
    shared_key: str | None = None  # HELO/PING/PONG handshake when set
    users: dict[str, str] = field(default_factory=dict)  # optional username -> password (--users-file)
    hostname: str = "kube-audit-tailer"  # our name in the handshake
    max_message_bytes: int = 64 * 1024 * 1024  # one message, also after decompression
    max_entries: int = 100_000  # entries in one message (a small gzip message can inflate to millions)
    handshake_timeout: float = 10.0  # seconds for TLS + PING
    idle_timeout: float = 600.0  # seconds without data before closing; 0 = never
    max_connections: int = 512  # more are closed at once (counted, logged once per burst)
    pre_auth_bytes: int = 16 * 1024  # bytes an unauthenticated peer may send before its PING
    max_buffered_bytes: int = 256 * 1024 * 1024  # partial messages of all connections together


@dataclass(frozen=True)
class HttpSettings:
    host: str = "0.0.0.0"
    port: int = 8080


@dataclass(frozen=True)
class ConfigMapSettings:
    """Audit ConfigMaps per tracked object (tailer/configmaps/writer.py)."""

    enabled: bool = True  # off by itself (one log line) when there is no cluster to talk to
    kubeconfig: str | None = None  # None: in-cluster service account, else $KUBECONFIG or ~/.kube/config
    track: tuple[tuple[str, str], ...] = ()  # (group, resource); empty: every custom resource
    service_account: str = "system:serviceaccount:kube-audit:kube-audit-tailer"  # our own events are ignored
    cluster_scope_namespace: str = "kube-audit"  # where ConfigMaps of cluster-scoped objects live
    flush_interval: float = 2.0  # seconds; at most one write per object per interval
    max_bytes: int = 512 * 1024  # largest entries.json value of one ConfigMap; oldest entries leave first
    max_pending: int = 10_000  # entries waiting for the API, all objects together; more are dropped
    retry_max_wait: float = 30.0  # seconds, cap of the exponential backoff when the API fails
    cluster: str = ""  # the cluster this tailer runs in (the forwarders' --cluster): only its events are projected


@dataclass(frozen=True)
class StoreSettings:
    target: str | None = None  # SQLite file path or postgresql:// URL; None = no store
    retention_age: float = 30 * 86400.0  # seconds an event is kept; 0 = forever
    retention_bytes: int = 0  # bytes of stored event JSON kept, oldest dropped first; 0 = unlimited
    retention_interval: float = 300.0  # seconds between retention runs
    readers: int = 4  # reader threads (PostgreSQL: pooled reader connections) for API queries
    query_timeout: float = 10.0  # seconds one API query may run before it is stopped


@dataclass(frozen=True)
class ApiSettings:
    auth: str = "disabled"  # token-file | kubernetes | none | disabled (the API answers 503)
    token_file: str | None = None  # CSV or YAML: token, user, namespaces ("*" = cluster-wide)
    watch_poll: float = 1.0  # seconds between store reads of an idle watcher (other replicas' writes)
    watch_write_timeout: float = 10.0  # seconds a watcher may take to read one batch before it is cut off
    query_workers: int = 2  # processes computing object views (versions, diff, ...), off the event loop
    query_timeout: float = 60.0  # seconds one object view may take before the request answers 504
    watch_max: int = 500  # watches open at once; more answer 429 with Retry-After
    watch_ring_events: int = 10_000  # newest committed events kept in memory for watchers
    watch_ring_bytes: int = 32 * 1024**2  # and their bytes at most (a watcher below the ring reads the store)
    watch_recheck: float = 60.0  # seconds between re-authorizations of an open watch (revoked: ERROR 403)
    host: str = "0.0.0.0"  # the HTTPS API address, used when ``tls`` is set (else the API is on HttpSettings)
    port: int = 8443
    tls: TLSFiles | None = None  # serving certificate and key, reloaded when they change
    process: bool = True  # with ``tls``: the API in a process of its own (tailer/apiproc.py), else on ingest's loop
    client_ca: str | None = None  # request-header CA: front-proxy client certificates (X-Remote-User)
    requestheader_from_cluster: bool = False  # client_ca and header names from kube-system's ConfigMap
    allowed_names: tuple[str, ...] = ()  # common names of the front proxy's certificate; empty: any
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)


@dataclass(frozen=True)
class SourcesSettings:
    """The sources stage (tailer/sources/): when a source reads as silent, gap or lagging."""

    silent_after: float = 30.0  # seconds without a status record or an event (status every 10 s)
    lagging_bytes: int = 64 * 1024 * 1024  # lagBytes above this: lagging
    gap_window: float = 3600.0  # seconds a reported gap keeps the source in state gap
    check_interval: float = 5.0  # seconds between saves of last-seen times and silent checks


@dataclass(frozen=True)
class Settings:
    forward: ForwardSettings = ForwardSettings()
    http: HttpSettings = HttpSettings()
    stdout: bool = True  # one audit event per line on stdout
    stdout_redact: bool = True  # Secret values and credentials redacted on stdout too
    rejected_file: str | None = None  # JSON lines of records that can never be stored; None = none kept
    rejected_file_max_bytes: int = 256 * 1024**2  # the file stops growing here
    log_level: str = "info"
    shutdown_timeout: float = 10.0  # seconds to finish in-flight chunks on SIGTERM
    configmaps: ConfigMapSettings = ConfigMapSettings()
    store: StoreSettings = StoreSettings()
    api: ApiSettings = ApiSettings()
    sources: SourcesSettings = SourcesSettings()
    integrity_key: bytes | None = None  # the chunk chain's key: --integrity-key-file, else the shared key
    chain_grace: float = 30.0  # seconds a missing chunk may take to arrive before it is a chain break
