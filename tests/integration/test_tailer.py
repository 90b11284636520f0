"""The tailer as a real process on loopback: stdout lines, acks, TLS, shared key, garbage."""

from __future__ import annotations

import socket
import ssl

import pytest

from kube_audit.runtime.tls import TLSFiles, client_context
from tests.conftest import sample_events, wait_for
from tests.helpers.sender import Sender


@pytest.mark.parametrize("compress", [False, True])
def test_records_reach_stdout_unchanged_before_the_ack(start_tailer, compress: bool) -> None:
    tailer = start_tailer()
    events = sample_events()
    with Sender("127.0.0.1", tailer.port) as sender:
        for i in range(0, len(events), 50):
            sender.send_chunk(events[i : i + 50], compress=compress)
            # the ack came back: the lines of this chunk are already on stdout
            assert tailer.records() == events[: i + 50]
    assert tailer.metric("tailer_events_received_total") == len(events)
    assert tailer.metric("tailer_acks_sent_total") == -(-len(events) // 50)


def test_garbage_closes_only_that_connection(start_tailer) -> None:
    tailer = start_tailer()
    with Sender("127.0.0.1", tailer.port) as good, socket.create_connection(("127.0.0.1", tailer.port)) as bad:
        bad.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert bad.recv(10) == b""  # closed by the tailer
        good.send_chunk([{"auditID": "x", "stage": "ResponseComplete"}])
    assert tailer.records() == [{"auditID": "x", "stage": "ResponseComplete"}]
    wait_for(lambda: tailer.metric("tailer_bad_frames_total", reason="not_an_array") == 1, what="bad frame")
    assert any(e["event"] == "bad_frame" and e["reason"] == "not_an_array" for e in tailer.logs())
    assert tailer.proc.poll() is None


def test_oversized_message_is_refused(start_tailer) -> None:
    tailer = start_tailer("--max-message-bytes", "64Ki")
    with Sender("127.0.0.1", tailer.port) as sender, pytest.raises((ConnectionError, OSError)):
        sender.send_chunk([{"blob": "x" * 200_000}])
    wait_for(lambda: tailer.metric("tailer_bad_frames_total", reason="message_too_large") == 1, what="counter")
    assert tailer.records() == []


def test_shared_key_handshake(start_tailer) -> None:
    tailer = start_tailer("--shared-key", "s3cret")
    with Sender("127.0.0.1", tailer.port, shared_key="s3cret") as sender:
        sender.send_chunk([{"ok": 1}])
    with pytest.raises(Exception, match="shared_key mismatch"):
        Sender("127.0.0.1", tailer.port, shared_key="wrong")
    wait_for(lambda: tailer.metric("tailer_auth_failures_total", reason="shared_key") == 1, what="auth counter")
    assert tailer.records() == [{"ok": 1}]


def test_shared_key_from_file(start_tailer, tmp_path) -> None:
    (tmp_path / "key").write_text("from-file\n")
    tailer = start_tailer("--shared-key-file", str(tmp_path / "key"))
    with Sender("127.0.0.1", tailer.port, shared_key="from-file") as sender:
        sender.send_chunk([{"ok": 2}])
    assert tailer.records() == [{"ok": 2}]


def test_mutual_tls(start_tailer, pki) -> None:
    tailer = start_tailer("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
                          "--tls-ca", str(pki.ca), "--tls-verify-client", "true")
    good = client_context(TLSFiles(ca=str(pki.ca), cert=str(pki.client.cert), key=str(pki.client.key)))
    with Sender("127.0.0.1", tailer.port, tls=good, server_name="kube-audit-tailer") as sender:
        sender.send_chunk([{"tls": True}])
    assert tailer.records() == [{"tls": True}]
    stranger = client_context(TLSFiles(ca=str(pki.ca), cert=str(pki.other_client.cert),
                                       key=str(pki.other_client.key)))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with Sender("127.0.0.1", tailer.port, tls=stranger, server_name="kube-audit-tailer") as sender:
            sender.send_chunk([{"no": 1}])
    wait_for(lambda: tailer.metric("tailer_auth_failures_total", reason="tls") >= 1, what="tls failure counter")
    assert tailer.records() == [{"tls": True}]


@pytest.mark.parametrize(
    "args",
    [["--listen", "nope"], ["--tls-cert", "/x.crt"], ["--tls-verify-client", "true"], ["--shared-key-file", "/nonexistent"],
     ["--max-message-bytes", "-3"]],
)
def test_bad_flags_are_one_line_errors_with_status_2(args) -> None:
    import subprocess
    import sys

    from tests.conftest import python_env

    proc = subprocess.run([sys.executable, "-m", "tailer.cli", *args], capture_output=True, text=True, env=python_env(),
                          timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audit-tailer: error: ")


def test_sigterm_exits_zero(start_tailer) -> None:
    tailer = start_tailer()
    assert tailer.stop() == 0
    assert any(e["event"] == "tailer_stopped" for e in tailer.logs())


def test_chunks_sent_back_to_back_are_acked_in_order(start_tailer) -> None:
    import uuid

    import fluent_forward as ff

    tailer = start_tailer()
    ids = [uuid.uuid4().hex for _ in range(20)]
    with Sender("127.0.0.1", tailer.port) as sender:
        for n, cid in enumerate(ids):  # all of them before reading a single ack
            packed = b"".join(ff.encode_entry(ff.EventTime(1, i), {"chunk": n, "i": i}) for i in range(50))
            sender.sock.sendall(ff.encode_packed_forward("audit", packed, chunk=cid, compress=n % 2 == 0))
        assert [sender.receive() for _ in ids] == [ff.Ack(cid) for cid in ids]
    assert [(r["chunk"], r["i"]) for r in tailer.records()] == [(n, i) for n in range(20) for i in range(50)]
