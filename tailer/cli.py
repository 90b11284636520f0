"""Flags and AUDIT_TAILER_* environment variables -> one frozen Settings, then run."""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence

from daemon.flags import EnvParser, parse_bool, parse_duration, parse_hostport, parse_size, read_secret
from daemon.observability import LEVELS
from daemon.tls import TLSFiles

from .settings import ConfigMapSettings, ForwardSettings, HttpSettings, Settings

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
    p.add_argument("--shutdown-timeout", type=parse_duration, default=10.0,
                   help="time to finish in-flight chunks on SIGTERM (default 10s)")
    add_configmap_flags(p)
    p.add_argument("--log-level", choices=LEVELS, default="info", help="log level (default info)")
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
        from .kube import in_cluster_namespace

        account = f"system:serviceaccount:{in_cluster_namespace() or 'kube-audit'}:kube-audit-tailer"
    # the environment gives --track as a comma-separated list of strings
    track = tuple(parse_track(t) if isinstance(t, str) else t for t in args.track)
    return ConfigMapSettings(
        enabled=args.configmaps, kubeconfig=args.kubeconfig, track=track, service_account=account,
        cluster_scope_namespace=args.cluster_scope_namespace, flush_interval=args.configmap_flush_interval,
        max_bytes=args.configmap_max_bytes, max_pending=args.configmap_max_pending,
        retry_max_wait=args.configmap_retry_max_wait,
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
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            parser.error("--tls-cert and --tls-key go together")
        tls = TLSFiles(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key)
    if args.tls_verify_client and not (tls and args.tls_ca):
        parser.error("--tls-verify-client needs --tls-cert, --tls-key and --tls-ca")
    return Settings(
        forward=ForwardSettings(
            host=args.listen[0], port=args.listen[1], tls=tls, verify_client=args.tls_verify_client,
            shared_key=shared_key, hostname=args.hostname, max_message_bytes=args.max_message_bytes,
        ),
        http=HttpSettings(host=args.http_listen[0], port=args.http_listen[1]),
        stdout=args.stdout,
        log_level=args.log_level,
        shutdown_timeout=args.shutdown_timeout,
        configmaps=configmap_settings(parser, args),
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse(argv)
    from daemon import lifecycle
    from daemon.observability import setup_logging

    from .app import serve

    setup_logging(settings.log_level)
    try:
        return lifecycle.run(lambda stop: serve(settings, stop))
    except Exception as exc:  # configuration errors found at start-up
        from daemon.observability import get_logger

        get_logger().error("tailer_failed", error=str(exc), error_type=type(exc).__name__)
        return 1


if __name__ == "__main__":
    sys.exit(main())

