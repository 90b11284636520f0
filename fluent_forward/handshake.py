"""The HELO / PING / PONG shared-key handshake, both sides, as pure state. No I/O.

Digests are SHA-512 hex over byte concatenations, as in the forward protocol v1 spec:
  PING: sha512(shared_key_salt + client_hostname + nonce + shared_key)
        password: sha512(auth_salt + username + password)
  PONG: sha512(shared_key_salt + server_hostname + nonce + shared_key)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

from .codec import encode_helo, encode_ping, encode_pong
from .errors import HandshakeError
from .model import Helo, Ping, Pong


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def _random() -> bytes:
    """A fresh nonce or salt: 16 bytes, as long as Fluent Bit's, but printable (96 random bits in base64url)
    so that every peer's msgpack decoder takes it as a valid UTF-8 str."""
    return secrets.token_urlsafe(12).encode("ascii")


def digest(*parts: str | bytes) -> str:
    return hashlib.sha512(b"".join(_b(p) for p in parts)).hexdigest()


class ServerHandshake:
    """Server side: send ``helo()``, then answer the client's PING with ``answer(ping)``."""

    def __init__(
        self,
        shared_key: str,
        hostname: str,
        users: Mapping[str, str] | None = None,
        *,
        nonce: bytes | None = None,
        auth_salt: bytes | None = None,
    ) -> None:
        self.shared_key = shared_key
        self.hostname = hostname
        self.users = dict(users or {})
        self.nonce = nonce if nonce is not None else _random()
        self.auth_salt = (auth_salt if auth_salt is not None else _random()) if self.users else b""

    def helo(self) -> bytes:
        return encode_helo(Helo(nonce=self.nonce, auth_salt=self.auth_salt, keepalive=True))

    def answer(self, ping: Ping) -> tuple[bytes, str | None]:
        """The PONG to send, and the failure reason (None when the client is authenticated)."""
        reason = self._check(ping)
        if reason is not None:  # as Fluent Bit and Fluentd refuse: no hostname, no digest
            return encode_pong(Pong(auth_ok=False, reason=reason, hostname="", shared_key_digest="")), reason
        pong = Pong(
            auth_ok=True,
            reason="",
            hostname=self.hostname,
            shared_key_digest=digest(ping.shared_key_salt, self.hostname, self.nonce, self.shared_key),
        )
        return encode_pong(pong), None

    def _check(self, ping: Ping) -> str | None:
        if ping.hostname == self.hostname:
            return "same hostname between input and output: invalid configuration"
        expected = digest(ping.shared_key_salt, ping.hostname, self.nonce, self.shared_key)
        if not hmac.compare_digest(expected, ping.shared_key_digest):
            return "shared_key mismatch"
        if self.users:
            password = self.users.get(ping.username)
            if password is None:
                return "username/password mismatch"
            wanted = digest(self.auth_salt, ping.username, password)
            if not hmac.compare_digest(wanted, ping.password_digest):
                return "username/password mismatch"
        return None


class ClientHandshake:
    """Client side: answer the server's HELO with ``ping(helo)``, then ``check(pong)``."""

    def __init__(
        self,
        shared_key: str,
        hostname: str,
        username: str = "",
        password: str = "",
        *,
        salt: bytes | None = None,
    ) -> None:
        self.shared_key = shared_key
        self.hostname = hostname
        self.username = username
        self.password = password
        self.salt = salt if salt is not None else _random()
        self._nonce: bytes | None = None

    def ping(self, helo: Helo) -> bytes:
        self._nonce = helo.nonce
        password_digest = digest(helo.auth_salt, self.username, self.password) if helo.auth_salt else ""
        return encode_ping(
            Ping(
                hostname=self.hostname,
                shared_key_salt=self.salt,
                shared_key_digest=digest(self.salt, self.hostname, helo.nonce, self.shared_key),
                username=self.username,
                password_digest=password_digest,
            )
        )

    def check(self, pong: Pong) -> None:
        if self._nonce is None:
            raise HandshakeError("PONG before HELO")
        if not pong.auth_ok:
            raise HandshakeError(f"refused by server: {pong.reason or 'no reason given'}")
        if pong.hostname == self.hostname:
            raise HandshakeError("same hostname between input and output: invalid configuration")
        expected = digest(self.salt, pong.hostname, self._nonce, self.shared_key)
        if not hmac.compare_digest(expected, pong.shared_key_digest):
            raise HandshakeError("shared_key mismatch: the server does not know our key")
