"""No unauthenticated peer can take a real tailer process down: a connection flood and an entry bomb
over real loopback sockets, bounded in count and time."""

from __future__ import annotations

import gzip
import socket
from pathlib import Path

import httpx
import msgpack

from tests.conftest import wait_for
from tests.helpers.sender import Sender


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_health_stays_up_under_a_connection_flood_and_refusals_are_logged_once(start_tailer) -> None:
    tailer = start_tailer("--max-connections", "20")
    flood: list[socket.socket] = []
    try:
        for _ in range(300):
            flood.append(socket.create_connection(("127.0.0.1", tailer.port), timeout=10))
        wait_for(lambda: tailer.metric("tailer_connections_refused_total", reason="max_connections") >= 280,
                 what="280 refusals")
        answer = httpx.get(f"http://127.0.0.1:{tailer.http_port}/healthz", timeout=5)
        assert answer.status_code == 200
        assert tailer.metric("tailer_connections_open") == 20
    finally:
        for sock in flood:
            sock.close()
    wait_for(lambda: tailer.metric("tailer_connections_open") == 0, what="the flood gone")
    with Sender("127.0.0.1", tailer.port) as sender:
        sender.send_chunk([{"after": "flood"}])
    assert tailer.records() == [{"after": "flood"}]
    events = [e["event"] for e in tailer.logs()]
    assert events.count("connections_refused") == 1 and events.count("connections_accepted_again") == 1
    assert not any("Traceback" in line for line in tailer.stderr().splitlines())


def test_a_30kb_message_of_ten_million_entries_is_refused_without_growing(start_tailer) -> None:
    tailer = start_tailer()
    bomb = gzip.compress(b"\x92\x00\x80" * 10_000_000, 9)
    assert len(bomb) < 40_000
    with socket.create_connection(("127.0.0.1", tailer.port), timeout=30) as bad, \
            Sender("127.0.0.1", tailer.port) as good:
        bad.sendall(msgpack.packb(["audit", bomb, {"compressed": "gzip", "chunk": "bomb"}], use_bin_type=True))
        assert bad.recv(100) == b""  # closed, no ack
        good.send_chunk([{"still": "served"}])
    wait_for(lambda: tailer.metric("tailer_bad_frames_total", reason="too_many_entries") == 1, what="refusal")
    assert tailer.records() == [{"still": "served"}]
    assert tailer.proc is not None and peak_rss_mb(tailer.proc.pid) < 300  # the old decoder: gigabytes, OOM
