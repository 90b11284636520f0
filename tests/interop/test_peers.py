"""Interop with forward-protocol implementations nobody here wrote.

- fluent-logger (PyPI) sending Message mode to our tailer;
- @fluent-org/logger (npm) FluentClient sending with acks, shared key and gzip to our tailer;
- our encoder sending to @fluent-org/logger's FluentServer and being acked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import fluent_forward as ff
from tests.conftest import ROOT, sample_events, wait_for
from tests.helpers.sender import Receiver, Sender

pytestmark = pytest.mark.interop
NODE_DIR = ROOT / "tests" / "interop" / "node"
needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules" / "@fluent-org" / "logger").exists(),
    reason="node and tests/interop/node/node_modules (npm ci) are installed by .ci/run",
)


def _fluent_logger_send(port: int, events: list[dict]) -> None:
    from fluent import sender

    client = sender.FluentSender("audit", host="127.0.0.1", port=port, nanosecond_precision=True)
    try:
        for i, event in enumerate(events):
            assert client.emit_with_time(None, 1_763_629_200 + i + 0.25, event), client.last_error
    finally:
        client.close()


def test_python_fluent_logger_message_mode(start_tailer) -> None:
    tailer = start_tailer()
    events = sample_events()[:40]
    _fluent_logger_send(tailer.port, events)
    wait_for(lambda: len(tailer.records()) == len(events), what="40 records on stdout")
    assert tailer.records() == events
    assert tailer.metric("tailer_chunks_received_total", mode="message") == len(events)


def test_python_fluent_logger_times_and_tags_decode_exactly() -> None:
    receiver = Receiver()
    try:
        events = sample_events()[:10]
        _fluent_logger_send(receiver.port, events)
        wait_for(lambda: len(receiver.entries) == len(events), what="10 entries decoded")
    finally:
        receiver.close()
    assert receiver.entries == [
        ("audit", ff.EventTime(1_763_629_200 + i, 250_000_000), e) for i, e in enumerate(events)
    ]
    assert set(receiver.modes) == {"message"}


@needs_node
@pytest.mark.parametrize("mode", ["CompressedPackedForward", "PackedForward", "Forward", "Message"])
def test_node_client_with_ack_shared_key_and_gzip(start_tailer, tmp_path: Path, mode: str) -> None:
    tailer = start_tailer("--shared-key", "interop-key")
    events = sample_events()[:60]
    payload = [[1_763_629_200 + i, 7 * i, e] for i, e in enumerate(events)]
    (tmp_path / "events.json").write_text(json.dumps(payload))
    proc = subprocess.run(
        ["node", str(NODE_DIR / "send.js"), "127.0.0.1", str(tailer.port), str(tmp_path / "events.json"), mode,
         "interop-key"],
        capture_output=True, text=True, timeout=120, cwd=NODE_DIR,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"acked {len(events)}"  # every emit promise resolved on our ack
    assert tailer.records() == events  # acked means already on stdout
    if mode == "CompressedPackedForward":
        assert tailer.metric("tailer_chunks_received_total", mode="compressed") >= 1
    assert tailer.metric("tailer_auth_failures_total", reason="shared_key") == 0


@needs_node
@pytest.mark.parametrize("mode", ["CompressedPackedForward", "Message"])
def test_node_client_times_decode_exactly(tmp_path: Path, mode: str) -> None:
    receiver = Receiver(shared_key="k")
    try:
        payload = [[1_763_629_200 + i, 7 * i + 1, {"i": i}] for i in range(30)]
        (tmp_path / "events.json").write_text(json.dumps(payload))
        proc = subprocess.run(
            ["node", str(NODE_DIR / "send.js"), "127.0.0.1", str(receiver.port), str(tmp_path / "events.json"),
             mode, "k"], capture_output=True, text=True, timeout=120, cwd=NODE_DIR,
        )
        assert proc.returncode == 0, proc.stderr
    finally:
        receiver.close()
    assert receiver.entries == [("audit", ff.EventTime(s, ns), r) for s, ns, r in payload]
    assert set(receiver.modes) == {"compressed" if mode == "CompressedPackedForward" else "message"}


@needs_node
def test_node_client_with_wrong_key_is_refused(start_tailer, tmp_path: Path) -> None:
    tailer = start_tailer("--shared-key", "right")
    (tmp_path / "events.json").write_text(json.dumps([[1, 0, {"a": 1}]]))
    proc = subprocess.Popen(
        ["node", str(NODE_DIR / "send.js"), "127.0.0.1", str(tailer.port), str(tmp_path / "events.json"),
         "PackedForward", "wrong"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=NODE_DIR,
    )
    try:
        wait_for(lambda: tailer.metric("tailer_auth_failures_total", reason="shared_key") >= 1, what="refusal")
    finally:
        proc.kill()
        proc.communicate()
    assert tailer.records() == []


@needs_node
@pytest.mark.parametrize("shared_key", [None, "node-key"])
@pytest.mark.parametrize("compress", [False, True])
def test_our_encoder_to_node_server_is_acked(shared_key: str | None, compress: bool) -> None:
    args = ["node", str(NODE_DIR / "server.js")] + ([shared_key] if shared_key else [])
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=NODE_DIR)
    try:
        assert server.stdout is not None
        first = server.stdout.readline().split()
        assert first[0] == "LISTENING", first
        events = sample_events()[:25]
        times = [ff.EventTime(1_763_629_200 + i, 1_000_003 * i) for i in range(len(events))]
        with Sender("127.0.0.1", int(first[1]), shared_key=shared_key) as sender:
            sender.send_chunk(events, compress=compress, times=times)  # asserts the ack
        received = [json.loads(server.stdout.readline()) for _ in events]
    finally:
        server.terminate()
        server.communicate(timeout=10)
    assert [r["record"] for r in received] == events
    assert [r["tag"] for r in received] == ["audit"] * len(events)
    assert [tuple(r["time"]) for r in received] == [(t.seconds, t.nanoseconds) for t in times]


@needs_node
def test_the_forwarder_s_kube_audit_option_and_status_records_do_not_disturb_another_receiver(
        start_forwarder, tmp_path: Path) -> None:
    """A receiver nobody here wrote (@fluent-org/logger's FluentServer, like Fluent Bit's in_forward, uses
    the options it knows and ignores the rest) takes and acks chained chunks and status records."""
    from kube_audit.model.source import STATUS_TAG

    server = subprocess.Popen(["node", str(NODE_DIR / "server.js"), "node-key"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=NODE_DIR)
    try:
        assert server.stdout is not None
        first = server.stdout.readline().split()
        assert first[0] == "LISTENING", first
        log = tmp_path / "audit.log"
        log.touch()
        fwd = start_forwarder(int(first[1]), log, "--shared-key", "node-key", "--cluster", "c1",
                              "--flush-interval", "10ms", "--chunk-events", "10")
        events = sample_events()[:25]
        with log.open("ab") as fh:
            fh.write(b"".join(json.dumps(e).encode() + b"\n" for e in events))
        received = []
        while len([r for r in received if r["tag"] == "audit"]) < len(events):
            received.append(json.loads(server.stdout.readline()))
        wait_for(lambda: fwd.metric("forwarder_events_acked_total") == len(events), what="all acked")
        assert fwd.metric("forwarder_tamper_evidence") == 1
    finally:
        server.terminate()
        server.communicate(timeout=10)
    assert [r["record"] for r in received if r["tag"] == "audit"] == events
    status = [r["record"] for r in received if r["tag"] == STATUS_TAG]
    assert status and status[0]["kind"] == "ForwarderStatus" and status[0]["cluster"] == "c1"
