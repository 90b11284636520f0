"""Reaching the tailer, in layered steps, a timeout each: connect (TCP or Unix socket), optional TLS
to a proxy, optional HTTP CONNECT, optional TLS to the tailer. Bytes the proxy sent after its
response stay in the reader for the forward session."""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass

from kube_audit.runtime.tls import ReloadingContext, TLSConfigError

from .errors import TransportError

MAX_PROXY_RESPONSE = 16 * 1024


@dataclass(frozen=True)
class Route:
    tailer_host: str
    tailer_port: int
    proxy_kind: str | None = None  # None, "http-connect" or "unix"
    proxy_host: str = ""
    proxy_port: int = 0
    proxy_path: str = ""
    tls_server_name: str | None = None  # name to verify on the tailer's certificate
    timeout: float = 10.0  # seconds per step


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message}"
    reason = getattr(exc, "reason", None)
    return str(reason or exc or type(exc).__name__)


# TLS alerts by which the proxy tells us it does not accept our client certificate
_CLIENT_CERT_ALERTS = ("CERTIFICATE_REQUIRED", "UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN",
                       "CERTIFICATE_EXPIRED", "CERTIFICATE_REVOKED", "UNSUPPORTED_CERTIFICATE", "ACCESS_DENIED")


def _proxy_tls_error(route: Route, proxy_tls: ReloadingContext | None, exc: BaseException) -> TransportError:
    """Say which side failed: the proxy's certificate (our check) or ours (the proxy's check)."""
    hop = _first_hop(route)
    cert = proxy_tls.files.cert if proxy_tls is not None else None
    ca = proxy_tls.files.ca if proxy_tls is not None else None
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TransportError("proxy_tls", f"the proxy's certificate is not valid for {route.proxy_host} "
                                           f"(checked against {ca or 'the system CAs'}): {exc.verify_message}")
    reason = _tls_reason(exc)
    # TLS 1.3: the server checks our certificate after the handshake and answers with an alert or, like
    # stunnel, often just a reset (which may also overtake the alert); both mean the same, so one message
    if isinstance(exc, ConnectionResetError) or any(alert in reason for alert in _CLIENT_CERT_ALERTS):
        if not cert:
            return TransportError("proxy_tls", f"the proxy {hop} refused the TLS session: it wants a client "
                                               "certificate and we sent none (set --proxy-cert and --proxy-key)")
        return TransportError("proxy_tls", f"the proxy {hop} refused the TLS session: it did not accept our "
                                           f"client certificate {cert}")
    return TransportError("proxy_tls", f"TLS with the proxy {hop}: {reason}")


def _tailer_tls_error(route: Route, tailer_tls: ReloadingContext, name: str, exc: BaseException) -> TransportError:
    """Say what is wrong in words a user acts on: its certificate, ours, or no TLS at all on that port."""
    where = describe(route)
    if isinstance(exc, ssl.SSLCertVerificationError):
        ca = tailer_tls.files.ca or "the system CAs"
        return TransportError("tailer_tls", f"the tailer's certificate is not valid for {name} (checked against "
                                            f"{ca}): {exc.verify_message}")
    reason = _tls_reason(exc)
    if any(alert in reason for alert in _CLIENT_CERT_ALERTS):
        cert = tailer_tls.files.cert
        if not cert:
            return TransportError("tailer_tls", f"{where} wants a client certificate and we sent none: "
                                                "set --tls-cert and --tls-key")
        return TransportError("tailer_tls", f"{where} refused our client certificate {cert}: it must be signed "
                                            "by a CA in the tailer's --tls-ca")
    # a plain-text server reads our ClientHello as garbage and closes, or answers in plain text
    if "WRONG_VERSION_NUMBER" in reason or isinstance(exc, (ssl.SSLEOFError, ConnectionResetError)) \
            or "EOF" in reason or not reason.strip():
        return TransportError("tailer_tls", f"{where} does not speak TLS on this port: drop --tls-ca, --tls-cert "
                                            "and --tls-key, or point --tailer at its TLS port")
    return TransportError("tailer_tls", f"TLS with the tailer ({name}): {reason}")


async def open_route(route: Route, tailer_tls: ReloadingContext | None, proxy_tls: ReloadingContext | None) -> Streams:
    reader, writer = await _connect(route, proxy_tls)
    try:
        if route.proxy_kind is not None:
            await _connect_tunnel(reader, writer, route, proxy_tls)
        if tailer_tls is not None:
            name = route.tls_server_name or route.tailer_host
            try:
                ctx = tailer_tls.get()
            except TLSConfigError as exc:
                raise TransportError("tailer_tls", str(exc)) from exc
            try:
                async with asyncio.timeout(route.timeout):
                    await writer.start_tls(ctx, server_hostname=name)
            except TimeoutError:
                raise TransportError("tailer_tls", f"TLS handshake with the tailer ({name}) timed out") from None
            except (ssl.SSLError, ConnectionError, OSError) as exc:
                raise _tailer_tls_error(route, tailer_tls, name, exc) from exc
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def _connect(route: Route, proxy_tls: ReloadingContext | None) -> Streams:
    try:
        async with asyncio.timeout(route.timeout):
            if route.proxy_kind == "unix":
                return await asyncio.open_unix_connection(route.proxy_path)
            if route.proxy_kind == "http-connect":
                ctx = None
                if proxy_tls is not None:
                    try:
                        ctx = proxy_tls.get()
                    except TLSConfigError as exc:
                        raise TransportError("proxy_tls", str(exc)) from exc
                return await asyncio.open_connection(
                    route.proxy_host, route.proxy_port, ssl=ctx,
                    server_hostname=route.proxy_host if ctx is not None else None,
                )
            return await asyncio.open_connection(route.tailer_host, route.tailer_port)
    except TimeoutError:
        raise TransportError("connect", f"connecting to {_first_hop(route)} timed out") from None
    except ssl.SSLError as exc:
        raise _proxy_tls_error(route, proxy_tls, exc) from exc
    except OSError as exc:
        what = "proxy" if route.proxy_kind else "tailer"
        raise TransportError("connect", f"{what} {_first_hop(route)} unreachable: {_os_reason(exc)}") from exc


def _os_reason(exc: OSError) -> str:
    # asyncio reports a refused connect as "Connect call failed (addr)"; the errno says it plainly
    if exc.errno and exc.errno > 0:  # (name lookup errors have negative codes and their own text)
        return os.strerror(exc.errno)
    return str(exc.strerror or exc or type(exc).__name__)


def describe(route: Route) -> str:
    """The far end of a connection, for errors after it was set up."""
    if route.proxy_kind is None:
        return f"the tailer {route.tailer_host}:{route.tailer_port}"
    return f"the tunnel to {route.tailer_host}:{route.tailer_port} through the proxy {_first_hop(route)}"


def _first_hop(route: Route) -> str:
    if route.proxy_kind == "unix":
        return f"unix://{route.proxy_path}"
    if route.proxy_kind == "http-connect":
        return f"{route.proxy_host}:{route.proxy_port}"
    return f"{route.tailer_host}:{route.tailer_port}"


async def _connect_tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, route: Route,
                          proxy_tls: ReloadingContext | None) -> None:
    target = f"{route.tailer_host}:{route.tailer_port}"
    if ":" in route.tailer_host:
        target = f"[{route.tailer_host}]:{route.tailer_port}"
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode("ascii"))
    try:
        async with asyncio.timeout(route.timeout):
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
    except TimeoutError:
        raise TransportError("proxy_connect", f"no answer to CONNECT {target} from the proxy") from None
    except asyncio.IncompleteReadError as exc:
        raise TransportError("proxy_connect", f"proxy closed the connection during CONNECT {target}") from exc
    except asyncio.LimitOverrunError as exc:
        raise TransportError("proxy_connect", "proxy response headers too long") from exc
    except ssl.SSLError as exc:
        raise _proxy_tls_error(route, proxy_tls, exc) from exc
    except ConnectionResetError as exc:
        if route.proxy_kind == "http-connect" and proxy_tls is not None:
            raise _proxy_tls_error(route, proxy_tls, exc) from exc
        raise TransportError("proxy_connect", f"proxy connection reset during CONNECT {target}") from exc
    except OSError as exc:
        raise TransportError("proxy_connect", f"proxy connection lost during CONNECT {target}: {exc}") from exc
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise TransportError("proxy_connect", f"not an HTTP answer to CONNECT: {status_line[:100]!r}")
    if parts[1] != "200":
        raise TransportError("proxy_connect", f"proxy refused CONNECT {target}: {status_line[:200]}")
