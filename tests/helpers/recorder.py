"""A recording forward-protocol receiver for tests: a thread with a listening socket that keeps every
batch as it came (tag, options, the entries field, records, the raw message bytes) and acks it, unless
told to hold acks or to drop connections. The product's receiver is tailer/; this one lets a test see
the wire (the forwarder's ``kube_audit`` option, its chain, resends byte for byte)."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any

import msgpack

import fluent_forward as ff


@dataclass
class Received:
    tag: str
    options: dict[str, Any]  # the options other than size/chunk/compressed
    payload: bytes | None  # the entries field as sent
    records: list[dict[str, Any]]
    chunk: str | None
    raw: bytes  # the whole message as it came
    connection: int  # which connection (1, 2, ...) carried it
    acked: bool


class Recorder:
    def __init__(self, shared_key: str | None = None, hostname: str = "recorder") -> None:
        self.shared_key, self.hostname = shared_key, hostname
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.received: list[Received] = []
        self.ack = True  # False: keep what comes without acking it
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._count = 0
        accept = threading.Thread(target=self._accept, name="recorder-accept", daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self._count += 1
                number = self._count
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, number), name=f"recorder-{number}", daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket, number: int) -> None:
        session = ff.ServerSession(self.hostname, self.shared_key)
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=64 * 1024 * 1024)
        stream, start, raws = bytearray(), 0, []  # the messages' bytes as they came, in order
        try:
            if (out := session.data_to_send()):
                conn.sendall(out)
            while True:
                event = session.next_event()
                if event is ff.NEED_DATA:
                    data = conn.recv(65536)
                    stream += data
                    unpacker.feed(data)
                    for obj in unpacker:
                        end = unpacker.tell()
                        if isinstance(obj, list) and obj and obj[0] != "PING":
                            raws.append(bytes(stream[start:end]))
                        start = end
                    session.receive_data(data)
                    continue
                if isinstance(event, ff.PeerClosed):
                    return
                if isinstance(event, ff.EventBatch):
                    self._keep(event, number, session, raws.pop(0))
                if (out := session.data_to_send()):
                    conn.sendall(out)
        except (OSError, ff.FluentForwardError):
            return
        finally:
            conn.close()

    def _keep(self, batch: ff.EventBatch, number: int, session: ff.ServerSession, raw: bytes) -> None:
        with self._lock:
            acked = self.ack
            self.received.append(Received(batch.tag, dict(batch.options.extra), batch.payload,
                                          [r for _, r in batch.entries], batch.options.chunk, raw, number, acked))
        if acked:
            session.ack(batch)

    def drop_connections(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def batches(self, tag: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if tag is None or r.tag == tag]

    def close(self) -> None:
        self._stopped = True
        self.sock.close()
        self.drop_connections()
        for t in self._threads:
            t.join(5)
