"""Flags and AUDIT_TAILER_* environment variables -> one frozen Settings, then run."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence

from kube_audit.runtime.flags import (
    EnvParser,
    parse_bool,
    parse_duration,
    parse_hostport,
    parse_limit,
    parse_size,
    read_secret,
)
from kube_audit.runtime.observability import LEVELS
from kube_audit.runtime.tls import TLSFiles
from tailer.settings import (
    ApiSettings,
    ConfigMapSettings,
    ForwardSettings,
    HttpSettings,
    Settings,
    SourcesSettings,
    StoreSettings,
)

ENV_PREFIX = "AUDIT_TAILER_"


def build_parser() -> EnvParser:
    p = EnvParser(
        prog="audit-tailer",
        description="Receive Kubernetes audit events over the Fluent forward protocol and deliver them.",
        env_prefix=ENV_PREFIX,
    )
    p.add_argument("--listen", type=parse_hostport, default=("0.0.0.0", 24224),
                   help="forward-protocol address host:port (default 0.0.0.0:24224)")
    p.add_argument("--http-listen", type=parse_hostport, default=("0.0.0.0", 8080),
                   help="health, metrics and API address host:port (default 0.0.0.0:8080)")
    p.add_argument("--tls-cert", help="server certificate (PEM); enables TLS with --tls-key")
    p.add_argument("--tls-key", help="server private key (PEM)")
    p.add_argument("--tls-ca", help="CA bundle that client certificates must chain to")
    p.add_argument("--tls-verify-client", type=parse_bool, default=False, metavar="BOOL",
                   help="require a client certificate signed by --tls-ca (default false)")
    p.add_argument("--shared-key", help="shared key for the HELO/PING/PONG handshake")
    p.add_argument("--shared-key-file", help="file holding the shared key (wins over --shared-key)")
    p.add_argument("--integrity-key-file", metavar="FILE",
                   help="key of the chunk chain (tamper evidence: checked on receipt, sealed in the store, "
                        "kubectl audit verify); default: the shared key; neither: no chain is kept")
    p.add_argument("--chain-grace", type=parse_duration, default=30.0,
                   help="how long a missing chunk of a forwarder's chain may take to arrive (another "
                        "connection, a resend) before it is a chain break (default 30s)")
    p.add_argument("--users-file", metavar="FILE",
                   help="handshake users, one 'USER PASSWORD' per line as in Fluent Bit's security.users; "
                        "needs --shared-key")
    p.add_argument("--hostname", default=f"audit-tailer@{socket.gethostname()}",
                   help="our name in the handshake (default audit-tailer@<host>)")
    p.add_argument("--max-message-bytes", type=parse_size, default=64 * 1024 * 1024,
                   help="largest single forward message, also after gzip (default 64Mi)")
    p.add_argument("--max-connections", type=int, default=512,
                   help="forward connections open at once; more are closed at once, counted and logged once "
                        "per burst (default 512)")
    p.add_argument("--idle-timeout", type=parse_duration, default=600.0,
                   help="close a forward connection that sent nothing for this long; 0 never (default 10m)")
    p.add_argument("--max-buffered-bytes", type=parse_size, default=256 * 1024 * 1024,
                   help="partial messages of all connections together; the read that goes over closes its "
                        "connection, the sender retries (default 256Mi)")
    p.add_argument("--max-entries", type=int, default=100_000,
                   help="most entries in one forward message; more closes the connection (default 100000)")
    p.add_argument("--stdout", type=parse_bool, default=True, metavar="BOOL",
                   help="print each audit event as one JSON line on stdout (default true)")
    p.add_argument("--stdout-redact", type=parse_bool, default=True, metavar="BOOL",
                   help="redact Secret values and tokens on stdout as in the store; false prints events "
                        "unchanged (default true)")
    p.add_argument("--rejected-file", default=None,
                   help="JSON lines of records that can never be stored as audit events (default "
                        "<data-dir>/rejected.jsonl; none keeps no file)")
    p.add_argument("--rejected-file-max-bytes", type=parse_size, default=256 * 1024**2,
                   help="the rejected-records file stops growing at this size (default 256Mi)")
    p.add_argument("--shutdown-timeout", type=parse_duration, default=10.0,
                   help="time to finish in-flight chunks on SIGTERM (default 10s)")
    add_configmap_flags(p)
    p.add_argument("--log-level", choices=LEVELS, default="info", help="log level (default info)")
    add_store_flags(p)
    return p


def parse_track(value: str) -> tuple[str, str]:
    group, _, resource = value.strip().rpartition("/")
    if not resource or "/" in group:
        raise argparse.ArgumentTypeError(f"expected group/resource (core: /resource), got {value!r}")
    return group, resource.lower()


def add_configmap_flags(p: EnvParser) -> None:
    p.add_argument("--configmaps", type=parse_bool, default=True, metavar="BOOL",
                   help="keep an audit ConfigMap per tracked object (default true; off without a cluster)")
    p.add_argument("--cluster", default="", metavar="NAME",
                   help="the cluster this tailer runs in, as its forwarder's --cluster names it: only that "
                        "cluster's events get audit ConfigMaps (other clusters' events are stored and served, "
                        "never written here) (default \"\": forwarders without --cluster)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account, else $KUBECONFIG)")
    p.add_argument("--track", action="append", type=parse_track, default=[], metavar="GROUP/RESOURCE",
                   help="resource to keep audit ConfigMaps for, repeatable (default: every custom resource)")
    p.add_argument("--service-account", default=None, metavar="USER",
                   help="our own user, whose events are ignored (default "
                        "system:serviceaccount:<pod namespace or kube-audit>:kube-audit-tailer)")
    p.add_argument("--cluster-scope-namespace", default="kube-audit",
                   help="namespace for the ConfigMaps of cluster-scoped objects (default kube-audit)")
    p.add_argument("--configmap-flush-interval", type=parse_duration, default=2.0,
                   help="at most one ConfigMap write per object per interval (default 2s)")
    p.add_argument("--configmap-max-bytes", type=parse_size, default=512 * 1024,
                   help="largest entries.json of one ConfigMap; oldest entries leave first (default 512Ki)")
    p.add_argument("--configmap-max-pending", type=int, default=10_000,
                   help="entries waiting for the API, all objects together; then the store projection waits (without a store: more are dropped) (default 10000)")
    p.add_argument("--configmap-retry-max-wait", type=parse_duration, default=30.0,
                   help="cap of the backoff between ConfigMap write attempts (default 30s)")


def configmap_settings(parser: EnvParser, args: argparse.Namespace) -> ConfigMapSettings:
    if args.configmap_max_bytes > 1000 * 1024:
        parser.error("--configmap-max-bytes must stay under the 1 MiB object limit (at most 1000Ki)")
    if args.configmap_max_pending <= 0:
        parser.error("--configmap-max-pending must be positive")
    account = args.service_account
    if account is None:
        from kube_audit.kube import in_cluster_namespace

        account = f"system:serviceaccount:{in_cluster_namespace() or 'kube-audit'}:kube-audit-tailer"
    # the environment gives --track as a comma-separated list of strings
    track = tuple(parse_track(t) if isinstance(t, str) else t for t in args.track)
    return ConfigMapSettings(
        enabled=args.configmaps, kubeconfig=args.kubeconfig, track=track, service_account=account,
        cluster_scope_namespace=args.cluster_scope_namespace, flush_interval=args.configmap_flush_interval,
        max_bytes=args.configmap_max_bytes, max_pending=args.configmap_max_pending,
        retry_max_wait=args.configmap_retry_max_wait, cluster=args.cluster,
    )


def add_store_flags(p: EnvParser) -> None:
    p.add_argument("--store", default="sqlite",
                   help="audit store: sqlite (a file in --data-dir), a postgresql:// URL, or none (default sqlite)")
    p.add_argument("--data-dir", default="/var/lib/audit-tailer", help="where the SQLite store lives")
    p.add_argument("--retention-age", type=parse_duration, default=30 * 86400.0,
                   help="delete stored events older than this, e.g. 30d; 0 keeps them (default 30d)")
    p.add_argument("--retention-bytes", type=parse_limit, default=0,
                   help="keep at most this much stored event JSON, e.g. 10Gi, oldest dropped first; "
                        "0 or unlimited: no limit (default unlimited)")
    p.add_argument("--retention-interval", type=parse_duration, default=300.0,
                   help="time between retention runs (default 5m)")
    p.add_argument("--store-readers", type=int, default=4,
                   help="reader threads (PostgreSQL: pooled connections) for API queries (default 4)")
    p.add_argument("--store-query-timeout", type=parse_duration, default=10.0,
                   help="an API query that runs longer is stopped and answered 503 (default 10s)")
    add_api_flags(p)
    add_source_flags(p)


def add_source_flags(p: EnvParser) -> None:
    p.add_argument("--source-silent-after", type=parse_duration, default=30.0,
                   help="a source that sent no status record and no event for this long is silent "
                        "(default 30s: three status intervals)")
    p.add_argument("--source-lagging-bytes", type=parse_size, default=64 * 1024 * 1024,
                   help="a source further behind its audit log than this is lagging (default 64Mi)")
    p.add_argument("--source-gap-window", type=parse_duration, default=3600.0,
                   help="a source that reported a gap less than this long ago is in state gap (default 1h)")
    p.add_argument("--source-check-interval", type=parse_duration, default=5.0,
                   help="time between saves of the sources' last-seen times and silent checks (default 5s)")


def source_settings(args: argparse.Namespace) -> SourcesSettings:
    return SourcesSettings(silent_after=args.source_silent_after, lagging_bytes=args.source_lagging_bytes,
                           gap_window=args.source_gap_window, check_interval=max(args.source_check_interval, 0.01))


def parse_names(value: str) -> tuple[str, ...]:
    """A comma-separated list (kube-apiserver's form for --requestheader-* flags)."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


def add_api_flags(p: EnvParser) -> None:
    p.add_argument("--api-auth", choices=("auto", "token-file", "kubernetes", "none"), default="auto",
                   help="audit API access: token-file, kubernetes (TokenReview + SubjectAccessReview), none (open); "
                        "auto = token-file with --token-file, kubernetes with --requestheader-client-ca-file, else "
                        "the API is disabled (default auto)")
    p.add_argument("--token-file", help="API bearer tokens: CSV token,user,namespace[,...] or YAML; * = cluster-wide")
    p.add_argument("--api-listen", type=parse_hostport, default=("0.0.0.0", 8443),
                   help="HTTPS address of the audit API with --api-tls-cert (default 0.0.0.0:8443); without TLS "
                        "the API is served on --http-listen")
    p.add_argument("--api-tls-cert", help="API serving certificate (PEM), reloaded when it changes")
    p.add_argument("--api-tls-key", help="API serving key (PEM)")
    p.add_argument("--api-process", type=parse_bool, default=True, metavar="BOOL",
                   help="with --api-tls-cert, serve the API from a process of its own, so that ingest and the "
                        "API do not wait for each other (default true; false: one process)")
    p.add_argument("--requestheader-client-ca-file", metavar="FILE",
                   help="CA of the front proxy (kube-aggregator) client certificate; enables X-Remote-User")
    p.add_argument("--requestheader-from-cluster", type=parse_bool, default=False, metavar="BOOL",
                   help="read the front proxy's CA and header names from kube-system/extension-apiserver-"
                        "authentication, as aggregated API servers do, at start and every 5m (default false)")
    p.add_argument("--requestheader-allowed-names", type=parse_names, default=(), metavar="NAMES",
                   help="common names the front proxy certificate may have, comma-separated (default: any)")
    p.add_argument("--requestheader-username-headers", type=parse_names, default=("X-Remote-User",),
                   metavar="HEADERS", help="headers holding the user name (default X-Remote-User)")
    p.add_argument("--requestheader-group-headers", type=parse_names, default=("X-Remote-Group",),
                   metavar="HEADERS", help="headers holding the groups (default X-Remote-Group)")
    p.add_argument("--requestheader-extra-headers-prefix", type=parse_names, default=("X-Remote-Extra-",),
                   metavar="PREFIXES", help="header prefixes of user extras (default X-Remote-Extra-)")
    p.add_argument("--watch-poll", type=parse_duration, default=1.0,
                   help="how often the watch ring re-reads the store when no commit woke it, for other replicas' writes "
                        "(default 1s)")
    p.add_argument("--watch-write-timeout", type=parse_duration, default=10.0,
                   help="a watch client that takes longer to read one batch is cut off (default 10s)")
    p.add_argument("--watch-recheck", type=parse_duration, default=60.0,
                   help="how often an open watch's authorization is checked again; revoked: ends with 403 "
                        "(default 1m)")
    p.add_argument("--watch-max", type=int, default=500,
                   help="watches open at once; more are refused with 429 and Retry-After (default 500)")
    p.add_argument("--watch-ring-events", type=int, default=10_000,
                   help="newest committed events kept in memory for all watchers; a watcher further behind "
                        "reads the store (default 10000)")
    p.add_argument("--watch-ring-bytes", type=parse_size, default=32 * 1024**2,
                   help="the same bound in bytes (an event costs ~4 KB there: its JSON, its watch line and its "
                        "objects, so 32Mi holds ~8,000); watchers are woken before the ring would drop what they "
                        "have not read, so a ring that holds more seconds of ingest means fewer, larger writes "
                        "(default 32Mi)")
    p.add_argument("--api-query-workers", type=int, default=2,
                   help="processes computing object views (versions, diff, bisect), off the event loop (default 2)")
    p.add_argument("--api-query-timeout", type=parse_duration, default=60.0,
                   help="an object view taking longer answers 504 (default 1m)")


def store_settings(parser: EnvParser, args: argparse.Namespace) -> StoreSettings:
    target = None if args.store == "none" else args.store
    if target == "sqlite":
        target = os.path.join(args.data_dir, "audit.db")
    elif target is not None and not target.startswith(("postgresql://", "postgres://")):
        parser.error(f"--store must be sqlite, none or a postgresql:// URL, got {args.store!r}")
    if args.store_readers < 1:
        parser.error("--store-readers must be at least 1")
    return StoreSettings(target=target, retention_age=args.retention_age, retention_bytes=args.retention_bytes,
                         retention_interval=max(args.retention_interval, 1.0), readers=args.store_readers,
                         query_timeout=max(args.store_query_timeout, 0.1))


def api_settings(parser: EnvParser, args: argparse.Namespace) -> ApiSettings:
    auth = args.api_auth
    front = bool(args.requestheader_client_ca_file or args.requestheader_from_cluster)
    if auth == "auto":
        auth = "token-file" if args.token_file else "kubernetes" if front else "disabled"
    if auth == "token-file" and not args.token_file:
        parser.error("--api-auth token-file needs --token-file")
    if args.watch_max < 1 or args.watch_ring_events < 1:
        parser.error("--watch-max and --watch-ring-events must be at least 1")
    if args.api_query_workers < 1:
        parser.error("--api-query-workers must be at least 1")
    for path in (args.token_file, args.api_tls_cert, args.api_tls_key, args.requestheader_client_ca_file):
        if path and not os.path.isfile(path):
            parser.error(f"{path} does not exist")
    tls = None
    if args.api_tls_cert or args.api_tls_key:
        if not (args.api_tls_cert and args.api_tls_key):
            parser.error("--api-tls-cert and --api-tls-key go together")
        tls = TLSFiles(cert=args.api_tls_cert, key=args.api_tls_key)
    if front and tls is None:
        parser.error("--requestheader-client-ca-file and --requestheader-from-cluster need --api-tls-cert and "
                     "--api-tls-key (client certificates come over TLS)")
    client_ca = args.requestheader_client_ca_file
    if args.requestheader_from_cluster:
        if client_ca:
            parser.error("--requestheader-from-cluster and --requestheader-client-ca-file exclude each other")
        client_ca = os.path.join(args.data_dir, "requestheader-client-ca.crt")
    return ApiSettings(
        auth=auth, token_file=args.token_file, watch_poll=max(args.watch_poll, 0.05),
        watch_write_timeout=args.watch_write_timeout, query_workers=args.api_query_workers,
        query_timeout=max(args.api_query_timeout, 0.1), host=args.api_listen[0], port=args.api_listen[1], tls=tls,
        client_ca=client_ca, requestheader_from_cluster=args.requestheader_from_cluster, allowed_names=args.requestheader_allowed_names,
        username_headers=args.requestheader_username_headers, group_headers=args.requestheader_group_headers,
        extra_prefixes=args.requestheader_extra_headers_prefix, watch_recheck=max(args.watch_recheck, 0.05), process=args.api_process,
        watch_max=args.watch_max, watch_ring_events=args.watch_ring_events, watch_ring_bytes=args.watch_ring_bytes)


def read_users(path: str) -> dict[str, str]:
    """``USER PASSWORD`` per line (Fluent Bit's ``security.users``); blank lines and ``#`` comments skipped."""
    users: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{number}: expected 'USER PASSWORD'")
            users[parts[0]] = parts[1].strip()
    if not users:
        raise ValueError(f"{path} holds no user")
    return users


def forward_settings(parser: EnvParser, args: argparse.Namespace, shared_key: str | None) -> ForwardSettings:
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            parser.error("--tls-cert and --tls-key go together")
        tls = TLSFiles(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key)
    if args.tls_verify_client and not (tls and args.tls_ca):
        parser.error("--tls-verify-client needs --tls-cert, --tls-key and --tls-ca")
    users: dict[str, str] = {}
    if args.users_file:
        if shared_key is None:
            parser.error("--users-file needs --shared-key or --shared-key-file (as Fluent Bit's security.users)")
        try:
            users = read_users(args.users_file)
        except (OSError, ValueError) as exc:
            parser.error(f"--users-file: {exc}")
    if args.max_entries <= 0:
        parser.error("--max-entries must be positive")
    if args.max_connections <= 0:
        parser.error("--max-connections must be positive")
    if args.max_buffered_bytes < args.max_message_bytes:
        parser.error("--max-buffered-bytes must be at least --max-message-bytes")
    return ForwardSettings(
        host=args.listen[0], port=args.listen[1], tls=tls, verify_client=args.tls_verify_client,
        shared_key=shared_key, users=users, hostname=args.hostname, max_message_bytes=args.max_message_bytes,
        max_entries=args.max_entries, max_connections=args.max_connections, idle_timeout=args.idle_timeout,
        max_buffered_bytes=args.max_buffered_bytes,
    )


def parse(argv: Sequence[str] | None = None) -> Settings:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        shared_key = read_secret(args.shared_key, args.shared_key_file, "shared key")
    except ValueError as exc:
        parser.error(str(exc))
    if shared_key == "":
        parser.error("the shared key is empty")
    try:
        integrity = read_secret(None, args.integrity_key_file, "integrity key")
    except ValueError as exc:
        parser.error(str(exc))
    if integrity == "":
        parser.error("the integrity key is empty")
    integrity = integrity if integrity is not None else shared_key
    forward = forward_settings(parser, args, shared_key)
    store, api = store_settings(parser, args), api_settings(parser, args)
    return Settings(
        forward=forward,
        http=HttpSettings(host=args.http_listen[0], port=args.http_listen[1]),
        stdout=args.stdout,
        stdout_redact=args.stdout_redact,
        rejected_file=None if args.rejected_file == "none" else (
            args.rejected_file or os.path.join(args.data_dir, "rejected.jsonl")),
        rejected_file_max_bytes=args.rejected_file_max_bytes,
        log_level=args.log_level,
        shutdown_timeout=args.shutdown_timeout,
        configmaps=configmap_settings(parser, args),
        store=store,
        api=api,
        sources=source_settings(args),
        integrity_key=integrity.encode() if integrity is not None else None,
        chain_grace=max(args.chain_grace, 0.0),
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse(argv)
    from kube_audit.runtime import lifecycle
    from kube_audit.runtime.observability import setup_logging

    from .app import start, tune_interpreter

    async def begin(rt: lifecycle.Runtime) -> None:
        await start(settings, rt)
        tune_interpreter()

    setup_logging(settings.log_level)
    try:
        return lifecycle.run(begin, settings.shutdown_timeout)
    except Exception as exc:  # configuration errors found at start-up
        from kube_audit.runtime.observability import get_logger

        get_logger().error("tailer_failed", error=str(exc), error_type=type(exc).__name__)
        return 1


if __name__ == "__main__":
    sys.exit(main())

