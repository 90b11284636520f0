"""A small blocking forward-protocol sender for tests and benchmarks (the product's is forwarder/)."""

from __future__ import annotations

import socket
import ssl
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack

import fluent_forward as ff


class Sender:
    def __init__(self, host: str, port: int, *, shared_key: str | None = None, tls: ssl.SSLContext | None = None,
                 server_name: str | None = None, hostname: str = "test-sender", timeout: float = 30.0,
                 username: str = "", password: str = "") -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            self.sock: socket.socket = tls.wrap_socket(sock, server_hostname=server_name or host) if tls else sock
        except BaseException:
            sock.close()
            raise
        self.decoder = ff.Decoder()
        self.inbox: list[ff.Message] = []
        if shared_key is not None:
            try:
                self._handshake(ff.ClientHandshake(shared_key, hostname, username, password))
            except BaseException:
                self.sock.close()
                raise

    def _handshake(self, shake: ff.ClientHandshake) -> None:
        helo = self.receive()
        assert isinstance(helo, ff.Helo), helo
        self.sock.sendall(shake.ping(helo))
        pong = self.receive()
        assert isinstance(pong, ff.Pong), pong
        shake.check(pong)

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def receive(self) -> ff.Message:
        while not self.inbox:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed by peer")
            self.inbox.extend(self.decoder.feed(data))
        return self.inbox.pop(0)

    def send_chunk(self, records: Sequence[dict[str, Any]], *, compress: bool = False, tag: str = "audit",
                   times: Iterable[ff.EventTime] | None = None, options: dict[str, Any] | None = None) -> str:
        """Send one PackedForward chunk and wait for its ack; returns the chunk id. ``options``: more
        entries of the option map (e.g. kube_audit.model.source.OPTION, as a kube-audit forwarder sends)."""
        chunk = uuid.uuid4().hex
        stamps = list(times) if times is not None else [ff.EventTime(1_763_629_200, i) for i in range(len(records))]
        packed = b"".join(ff.encode_entry(t, r) for t, r in zip(stamps, records, strict=True))
        message = ff.encode_packed_forward(tag, packed, chunk=chunk, size=len(records), compress=compress)
        if options:  # the same message with the option map extended
            tag_, payload, opts = msgpack.unpackb(message, raw=False)
            message = msgpack.packb([tag_, payload, {**opts, **options}], use_bin_type=True)
        self.sock.sendall(message)
        ack = self.receive()
        assert ack == ff.Ack(chunk), ack
        return chunk

    def close(self) -> None:
        self.sock.close()


class Receiver:
    """A blocking one-connection-at-a-time receiver on our decoder, to see times as they arrived."""

    def __init__(self, shared_key: str | None = None) -> None:
        import threading

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.shared_key = shared_key
        self.entries: list[tuple[str, ff.EventTime, dict[str, Any]]] = []
        self.modes: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                decoder = ff.Decoder()
                pending: list[ff.Message] = []
                if self.shared_key is not None:
                    shake = ff.ServerHandshake(self.shared_key, "py-receiver")
                    conn.sendall(shake.helo())
                    while not pending:
                        pending = decoder.feed(conn.recv(65536))
                    pong, _ = shake.answer(pending.pop(0))  # type: ignore[arg-type]
                    conn.sendall(pong)
                while True:
                    for msg in pending:
                        if isinstance(msg, ff.EventBatch):
                            self.modes.append(msg.mode)
                            self.entries.extend((msg.tag, t, r) for t, r in msg.entries)
                            if msg.options.chunk:
                                conn.sendall(ff.encode_ack(msg.options.chunk))
                    data = conn.recv(65536)
                    if not data:
                        break
                    pending = decoder.feed(data)

    def close(self) -> None:
        self.listener.close()
