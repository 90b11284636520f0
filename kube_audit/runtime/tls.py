"""SSL contexts built from files and rebuilt when those files change.

Kubernetes updates mounted Secrets by swapping a symlink, so we key on the resolved file's
inode, size and mtime, checked each time a context is asked for (that is, per connection).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass


class TLSConfigError(ValueError):
    """A certificate, key or CA file is missing or unusable."""


def _stamp(path: str | None) -> tuple[int, int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)  # follows symlinks: a Secret update changes the target
    except OSError as exc:
        raise TLSConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class TLSFiles:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def stamp(self) -> tuple[object, ...]:
        return (_stamp(self.ca), _stamp(self.cert), _stamp(self.key))


def server_context(files: TLSFiles, verify_client: bool) -> ssl.SSLContext:
    if not files.cert or not files.key:
        raise TLSConfigError("a TLS server needs both a certificate and a key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, files)
    if verify_client:
        if not files.ca:
            raise TLSConfigError("client-certificate verification needs a CA file")
        _load_ca(ctx, files.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(files: TLSFiles, verify: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if files.ca:
        _load_ca(ctx, files.ca)
    if files.cert or files.key:
        _load_chain(ctx, files)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _load_ca(ctx: ssl.SSLContext, ca: str) -> None:
    try:
        ctx.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load CA {ca}: {exc}") from exc


def _load_chain(ctx: ssl.SSLContext, files: TLSFiles) -> None:
    if not files.cert or not files.key:
        raise TLSConfigError("a client certificate needs both --*-cert and --*-key")
    try:
        ctx.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load certificate {files.cert} / key {files.key}: {exc}") from exc


class ReloadingContext:
    """Hands out an SSL context, rebuilding it when any of its files changed since the last build."""

    def __init__(self, files: TLSFiles, build: Callable[[TLSFiles], ssl.SSLContext]) -> None:
        self.files = files
        self._build = build
        self._stamp = files.stamp()
        self._ctx = build(files)
        self.reloads = 0

    def get(self) -> ssl.SSLContext:
        stamp = self.files.stamp()
        if stamp != self._stamp:
            self._ctx = self._build(self.files)
            self._stamp = stamp
            self.reloads += 1
        return self._ctx
