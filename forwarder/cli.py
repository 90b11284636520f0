"""Flags and AUDIT_FORWARDER_* environment variables -> one frozen Settings, then run."""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from kube_audit.model.source import MAX_NAME, SourceId
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

from .settings import BatchSettings, ClientSettings, FollowSettings, Settings
from .transport import Route

ENV_PREFIX = "AUDIT_FORWARDER_"


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value!r}")
    return number


def _service(value: str) -> tuple[str, str]:
    import argparse

    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected namespace/name, got {value!r}")
    return namespace, name


def _name(p: EnvParser, flag: str, value: str, empty_ok: bool) -> str:
    if not value and not empty_ok:
        p.error(f"{flag} must not be empty")
    if len(value) > MAX_NAME:
        p.error(f"{flag}: at most {MAX_NAME} characters, got {len(value)}")
    if any(not c.isprintable() or c.isspace() for c in value):
        p.error(f"{flag} {value!r}: no spaces or control characters")
    return value


def _integrity_key(p: EnvParser, path: str | None, shared_key: str | None) -> bytes | None:
    """The chain's key: the file's bytes (a trailing newline dropped), else the shared key, else none."""
    if not path:
        return shared_key.encode() if shared_key else None
    try:
        with open(path, "rb") as fh:
            key = fh.read().rstrip(b"\r\n")
    except OSError as exc:
        p.error(f"--integrity-key-file {path}: cannot read it: {exc.strerror}")
    if not key:
        p.error(f"--integrity-key-file {path} is empty")
    return key


def build_parser() -> EnvParser:
    p = EnvParser(prog="audit-forwarder", env_prefix=ENV_PREFIX,
                  description="Follow the kube-apiserver audit log and forward it to the audit tailer.")
    g = p.add_argument_group("files")
    g.add_argument("--audit-log-path", default="/var/log/audit/audit.log",
                   help="the apiserver's --audit-log-path; rotated backups are found beside it")
    g.add_argument("--position-file", default=None,
                   help="checkpoint file (default: <audit-log-path dir>/audit-forwarder.pos)")
    g.add_argument("--read-from-head", type=parse_bool, default=False, metavar="BOOL",
                   help="without a checkpoint, send everything already in the files (default false: only new lines)")
    g.add_argument("--max-event-bytes", type=parse_size, default=16 * 1024 * 1024,
                   help="longer lines are skipped and reported (default 16Mi)")
    g.add_argument("--max-held-files", type=_positive_int, default=16,
                   help="descriptors held open at most: the oldest unread files and the live one; other unread "
                        "files are closed and re-opened by their content later, never given up (default 16, min 2)")
    g.add_argument("--stat-interval", type=parse_duration, default=1.0,
                   help="stat the files this often when no file event arrives (default 1s)")
    g.add_argument("--dead-letter-file", help="append bad lines here as JSON lines")
    g = p.add_argument_group("batching")
    g.add_argument("--tag", default="audit", help="forward-protocol tag (default audit)")
    g.add_argument("--chunk-events", type=_positive_int, default=1000, help="events per chunk at most (default 1000)")
    g.add_argument("--chunk-bytes", type=parse_size, default=1024 * 1024,
                   help="chunk size before compression at most (default 1Mi)")
    g.add_argument("--flush-interval", type=parse_duration, default=0.2,
                   help="longest wait before a partial chunk is sent (default 200ms)")
    g.add_argument("--compress", type=parse_bool, default=True, metavar="BOOL",
                   help="gzip chunks: CompressedPackedForward (default true)")
    g = p.add_argument_group("tailer")
    g.add_argument("--tailer", type=lambda v: parse_hostport(v, ""), default=None,
                   help="tailer address host:port (this or --tailer-service)")
    g.add_argument("--tailer-service", type=_service, metavar="NAMESPACE/NAME",
                   help="look the tailer Service up before each connection: its cluster IP and port 'forward'")
    g.add_argument("--kubeconfig", help="kubeconfig for --tailer-service (default: in-cluster service account)")
    g.add_argument("--tls", type=parse_bool, default=False, metavar="BOOL",
                   help="TLS to the tailer (implied by --tls-ca or --tls-cert)")
    g.add_argument("--tls-ca", help="CA bundle that verifies the tailer's certificate")
    g.add_argument("--tls-cert", help="client certificate for the tailer (PEM)")
    g.add_argument("--tls-key", help="client key for the tailer (PEM)")
    g.add_argument("--tls-server-name", help="name expected on the tailer's certificate (default: the tailer host)")
    g.add_argument("--shared-key", help="shared key for the forward-protocol handshake")
    g.add_argument("--shared-key-file", help="file holding the shared key (wins over --shared-key)")
    g.add_argument("--username", default="", help="username for the handshake, if the tailer asks")
    g.add_argument("--password-file", help="file holding the handshake password")
    g.add_argument("--hostname", default=f"audit-forwarder@{socket.gethostname()}",
                   help="our name in the handshake (default audit-forwarder@<host>)")
    g.add_argument("--max-inflight-chunks", type=_positive_int, default=8,
                   help="unacked chunks at most; reading pauses when reached (default 8)")
    g.add_argument("--ack-timeout", type=parse_duration, default=30.0,
                   help="reconnect and resend when the oldest chunk is not acked in this time (default 30s)")
    g.add_argument("--connect-timeout", type=parse_duration, default=10.0,
                   help="timeout of each connection step: connect, proxy, TLS, handshake (default 10s)")
    g.add_argument("--backoff-max", type=parse_duration, default=30.0,
                   help="longest wait between reconnect attempts (default 30s)")
    g = p.add_argument_group("proxy")
    g.add_argument("--proxy", help="http-connect://host:port (mutual TLS) or unix:///path/proxy.sock")
    g.add_argument("--proxy-ca", help="CA bundle that verifies the proxy's certificate")
    g.add_argument("--proxy-cert", help="our client certificate for the proxy")
    g.add_argument("--proxy-key", help="our client key for the proxy")
    g = p.add_argument_group("source")
    g.add_argument("--source-name", default=socket.gethostname(),
                   help="this forwarder's name to the tailer, sent with every chunk "
                        "(default: the host name, beside the apiserver its host or pod name)")
    g.add_argument("--cluster", default="", help="the cluster's name, sent with every chunk (default: none, \"\")")
    g.add_argument("--integrity-key-file",
                   help="file holding the key that chains the chunks (tamper evidence; default: the shared key; "
                        "with neither, no chain)")
    g.add_argument("--status-interval", type=parse_duration, default=10.0,
                   help="send a status record (offset, lag, counts, gaps) this often and at once on a change; "
                        "0 sends none (default 10s)")
    g = p.add_argument_group("process")
    g.add_argument("--http-listen", type=parse_hostport, default=("0.0.0.0", 9880),
                   help="/healthz and /metrics address (default 0.0.0.0:9880)")
    g.add_argument("--shutdown-timeout", type=parse_duration, default=10.0,
                   help="time to get the last acks on SIGTERM (default 10s)")
    g.add_argument("--log-level", choices=LEVELS, default="info", help="log level (default info)")
    return p


def _route(p: EnvParser, a: argparse.Namespace) -> Route:
    server_name = a.tls_server_name
    if a.tailer_service:
        namespace, name = a.tailer_service
        host, port = f"{name}.{namespace}.svc", 0  # the address is looked up before each connection
        server_name = server_name or host  # the cluster IP is rarely on the certificate
    else:
        host, port = a.tailer
    if not host:
        p.error(f"--tailer needs a host: {host}:{port}")
    base = dict(tailer_host=host, tailer_port=port, tls_server_name=server_name,
                timeout=a.connect_timeout)
    proxy = a.proxy
    if not proxy:
        if a.proxy_ca or a.proxy_cert or a.proxy_key:
            p.error("--proxy-ca/--proxy-cert/--proxy-key need --proxy http-connect://host:port")
        return Route(**base)
    url = urlsplit(proxy)
    if url.scheme == "unix":
        path = url.path or url.netloc
        if not path:
            p.error(f"--proxy {proxy!r}: expected unix:///path/to/proxy.sock")
        return Route(**base, proxy_kind="unix", proxy_path=path)
    if url.scheme == "http-connect":
        try:
            proxy_port = url.port
        except ValueError:
            proxy_port = None
        if not url.hostname or not proxy_port:
            p.error(f"--proxy {proxy!r}: expected http-connect://host:port")
        return Route(**base, proxy_kind="http-connect", proxy_host=url.hostname, proxy_port=proxy_port)
    p.error(f"--proxy {proxy!r}: the scheme must be http-connect:// or unix://")


def parse(argv: Sequence[str] | None = None) -> Settings:
    import os

    p = build_parser()
    a = p.parse_args(argv)
    if (a.tailer is None) == (a.tailer_service is None):
        p.error("give either --tailer host:port or --tailer-service namespace/name")
    if a.kubeconfig and not a.tailer_service:
        p.error("--kubeconfig is only used with --tailer-service")
    try:
        shared_key = read_secret(a.shared_key, a.shared_key_file, "shared key")
        password = read_secret(None, a.password_file, "password") or ""
    except ValueError as exc:
        p.error(str(exc))
    if shared_key == "":
        p.error("the shared key is empty")
    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if bool(a.proxy_cert) != bool(a.proxy_key):
        p.error("--proxy-cert and --proxy-key go together")
    for flag in ("tls_ca", "tls_cert", "tls_key", "proxy_ca", "proxy_cert", "proxy_key", "shared_key_file",
                 "kubeconfig"):
        path = getattr(a, flag)
        if path and not os.path.isfile(path):
            p.error(f"--{flag.replace('_', '-')} {path}: no such file")
    route = _route(p, a)
    source = SourceId(_name(p, "--cluster", a.cluster, True), _name(p, "--source-name", a.source_name, False))
    integrity_key = _integrity_key(p, a.integrity_key_file, shared_key)
    tls = TLSFiles(a.tls_ca, a.tls_cert, a.tls_key) if (a.tls or a.tls_ca or a.tls_cert) else None
    proxy_tls = None
    if route.proxy_kind == "http-connect":
        proxy_tls = TLSFiles(a.proxy_ca, a.proxy_cert, a.proxy_key)
    position = a.position_file or os.path.join(os.path.dirname(os.path.abspath(a.audit_log_path)),
                                               "audit-forwarder.pos")
    return Settings(
        follow=FollowSettings(a.audit_log_path, position, a.read_from_head, a.max_event_bytes, a.max_held_files,
                              a.stat_interval, a.dead_letter_file),
        batch=BatchSettings(a.tag, a.chunk_events, a.chunk_bytes, a.flush_interval, a.compress),
        client=ClientSettings(route=route, tailer_service=a.tailer_service, kubeconfig=a.kubeconfig, tls=tls,
                              proxy_tls=proxy_tls, shared_key=shared_key, username=a.username, password=password, hostname=a.hostname,
                              max_inflight_chunks=a.max_inflight_chunks,
                              ack_timeout=a.ack_timeout, backoff_max=a.backoff_max),
        source=source, integrity_key=integrity_key, status_interval=a.status_interval,
        http_host=a.http_listen[0], http_port=a.http_listen[1],
        shutdown_timeout=a.shutdown_timeout, log_level=a.log_level,
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse(argv)
    from kube_audit.runtime import lifecycle
    from kube_audit.runtime.observability import get_logger, setup_logging
    from kube_audit.runtime.tls import TLSConfigError

    from .app import start
    from .errors import ConfigError

    setup_logging(settings.log_level)
    try:
        return lifecycle.run(lambda rt: start(settings, rt), settings.shutdown_timeout)
    except (TLSConfigError, ConfigError) as exc:
        get_logger().error("config_error", error=str(exc))
        return 2
    except Exception as exc:
        get_logger().error("forwarder_failed", error=str(exc), error_type=type(exc).__name__)
        return 1


if __name__ == "__main__":
    sys.exit(main())
