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
    p.add_argument("--hostname", default=f"audit-tailer@{socket.gethostname()}",
                   help="our name in the handshake (default audit-tailer@<host>)")
    p.add_argument("--max-message-bytes", type=parse_size, default=64 * 1024 * 1024,
                   help="largest single forward message, also after gzip (default 64Mi)")
    p.add_argument("--stdout", type=parse_bool, default=True, metavar="BOOL",
                   help="print each audit event as one JSON line on stdout (default true)")
    p.add_argument("--stdout-redact", type=parse_bool, default=True, metavar="BOOL",
                   help="redact Secret values and tokens on stdout as in the store; false prints events "
                        "unchanged (default true)")
    p.add_argument("--rejected-file", default="",
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
                   help="entries waiting for the API, all objects together; more are dropped (default 10000)")
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
        retry_max_wait=args.configmap_retry_max_wait,
    )


def add_store_flags(p: EnvParser) -> None:
    p.add_argument("--store", default="sqlite",
                   help="audit store: sqlite (a file in --data-dir), a postgresql:// URL, or none (default sqlite)")
    p.add_argument("--data-dir", default="/var/lib/audit-tailer", help="where the SQLite store lives")
    p.add_argument("--retention-age", type=parse_duration, default=30 * 86400.0,
                   help="delete stored events older than this, e.g. 30d; 0 keeps them (default 30d)")
    p.add_argument("--retention-bytes", type=parse_size, default=0,
                   help="keep at most this much stored event JSON, e.g. 10Gi, oldest dropped first (default unlimited)")
    p.add_argument("--retention-interval", type=parse_duration, default=300.0,
                   help="time between retention runs (default 5m)")
    p.add_argument("--api-auth", choices=("auto", "token-file", "kubernetes", "none"), default="auto",
                   help="audit API access: token-file, kubernetes (TokenReview + SubjectAccessReview), none (open); "
                        "auto = token-file with --token-file, else the API is disabled (default auto)")
    p.add_argument("--token-file", help="API bearer tokens: CSV token,user,namespace[,...] or YAML; * = cluster-wide")
    p.add_argument("--watch-poll", type=parse_duration, default=1.0,
                   help="how often an idle watch re-reads the store, for other replicas' writes (default 1s)")
    p.add_argument("--watch-write-timeout", type=parse_duration, default=10.0,
                   help="a watch client that takes longer to read one batch is cut off (default 10s)")


def store_settings(parser: EnvParser, args: argparse.Namespace) -> tuple[StoreSettings, ApiSettings]:
    target = None if args.store == "none" else args.store
    if target == "sqlite":
        target = os.path.join(args.data_dir, "audit.db")
    elif target is not None and not target.startswith(("postgresql://", "postgres://")):
        parser.error(f"--store must be sqlite, none or a postgresql:// URL, got {args.store!r}")
    auth = args.api_auth
    if auth == "auto":
        auth = "token-file" if args.token_file else "disabled"
    if auth == "token-file" and not args.token_file:
        parser.error("--api-auth token-file needs --token-file")
    if args.token_file and not os.path.isfile(args.token_file):
        parser.error(f"--token-file {args.token_file} does not exist")
    return (StoreSettings(target=target, retention_age=args.retention_age, retention_bytes=args.retention_bytes,
                          retention_interval=max(args.retention_interval, 1.0)),
            ApiSettings(auth=auth, token_file=args.token_file, watch_poll=max(args.watch_poll, 0.05),
                        watch_write_timeout=args.watch_write_timeout))


def parse(argv: Sequence[str] | None = None) -> Settings:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        shared_key = read_secret(args.shared_key, args.shared_key_file, "shared key")
    except ValueError as exc:
        parser.error(str(exc))
    if shared_key == "":
        parser.error("the shared key is empty")
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            parser.error("--tls-cert and --tls-key go together")
        tls = TLSFiles(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key)
    if args.tls_verify_client and not (tls and args.tls_ca):
        parser.error("--tls-verify-client needs --tls-cert, --tls-key and --tls-ca")
    store, api = store_settings(parser, args)
    return Settings(
        forward=ForwardSettings(
            host=args.listen[0], port=args.listen[1], tls=tls, verify_client=args.tls_verify_client,
            shared_key=shared_key, hostname=args.hostname, max_message_bytes=args.max_message_bytes,
        ),
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
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse(argv)
    from kube_audit.runtime import lifecycle
    from kube_audit.runtime.observability import setup_logging

    from .app import serve

    setup_logging(settings.log_level)
    try:
        return lifecycle.run(lambda stop: serve(settings, stop))
    except Exception as exc:  # configuration errors found at start-up
        from kube_audit.runtime.observability import get_logger

        get_logger().error("tailer_failed", error=str(exc), error_type=type(exc).__name__)
        return 1


if __name__ == "__main__":
    sys.exit(main())

