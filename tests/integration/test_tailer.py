"""The tailer as a real process on loopback: stdout lines, acks, TLS, shared key from a file, flags.

Protocol behaviour (garbage, handshake refusals, acks in order) is tested without processes in
tests/unit/test_forward_loops.py and tests/unit/test_session.py."""

from __future__ import annotations

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


def test_oversized_message_is_refused(start_tailer) -> None:
    tailer = start_tailer("--max-message-bytes", "64Ki")
    with Sender("127.0.0.1", tailer.port) as sender, pytest.raises((ConnectionError, OSError)):
        sender.send_chunk([{"blob": "x" * 200_000}])
    wait_for(lambda: tailer.metric("tailer_bad_frames_total", reason="message_too_large") == 1, what="counter")
    assert tailer.records() == []


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
     ["--max-message-bytes", "-3"], ["--users-file", "/nonexistent", "--shared-key", "k"],
     ["--users-file", "/etc/hostname"], ["--max-entries", "0"]],
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
