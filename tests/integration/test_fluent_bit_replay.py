"""Fluent Bit's recorded frames, byte for byte, over a real socket to a real tailer process: every record
arrives on stdout as Fluent Bit sent it, and every frame that asked for an ack gets its own `chunk` back.

Handshakes are redone with the tailer's own nonce (a recorded PING only verifies against the recorded
nonce; the sessions replay those exactly in tests/unit/test_fluent_bit_vectors.py); data frames go
verbatim, each in one write as Fluent Bit's are split only by TCP.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack

from kube_audit.contract import FLUENT_ANNOTATION, PREFIX
from tests.conftest import wait_for
from tests.helpers.sender import Sender
from tests.helpers.vectors import Case, Frame, chunk_of, expected_entries, load, names
from tests.integration.test_store import ev

KEY = "vector-shared-key"
REFUSED = ("s16", "s18", "s19", "s07")  # no data accepted in the transcript either


def data_frames(case: Case) -> list[Frame]:
    return [f for f in case.frames if f.is_data and (f.sender == "fb") == case.fluent_bit_sends]


def send(sender: Sender, frame: Frame) -> None:
    sender.sock.sendall(frame.data)
    chunk = chunk_of(frame)
    if chunk is not None:
        reply = sender.sock.recv(65536)  # the ack is one small frame
        assert reply == msgpack.packb({"ack": chunk}), (frame.type, reply)


def replay(tailer, cases: list[Case], **handshake: str) -> None:
    expected: list[dict] = []
    for case in cases:
        with Sender("127.0.0.1", tailer.port, **handshake) as sender:
            for frame in data_frames(case):
                send(sender, frame)
                expected.extend(record for _, record, _ in expected_entries(frame))
                want = len(expected)
                wait_for(lambda: len(tailer.records()) >= want, what=f"{case.name} on stdout")  # noqa: B023
    assert tailer.records() == expected


def test_fluent_bit_out_forward_frames_to_a_plain_tailer(start_tailer) -> None:
    cases = [load(n) for n in names() if n.startswith("s") and not n.startswith(REFUSED)
             and "shared_key" not in load(n).params]
    assert len(cases) == 12
    tailer = start_tailer()
    replay(tailer, cases)
    assert tailer.metric("tailer_bad_frames_total") == 0


def test_fluent_bit_frames_after_a_handshake_with_users(start_tailer, tmp_path) -> None:
    (tmp_path / "users").write_text("# as security.users\nalice s3cret-pass\n")
    tailer = start_tailer("--shared-key", KEY, "--users-file", str(tmp_path / "users"))
    keyed = [load(n) for n in ("s08-shared_key", "s09-shared_key_users", "s17-shared_key_helo_bin_fluentd_style")]
    clients = [load(n) for n in names() if n.startswith("r") and data_frames(load(n))
               and not n.startswith(("r04", "r07"))]  # (their handshakes were refused)
    replay(tailer, keyed + clients, shared_key=KEY, hostname="fb-sender", username="alice", password="s3cret-pass")
    assert tailer.metric("tailer_auth_failures_total", reason="shared_key") == 0


def with_audit_events(frame: Frame, events: Iterator[dict]) -> bytes:
    """The recorded frame with each record swapped for an audit event: Fluent Bit's own tag, times, entry
    shapes, metadata and options (the transcripts' records are not audit events, so the store would not
    keep them). Only msgpack's header widths may differ from Fluent Bit's."""
    message = msgpack.unpackb(frame.data, raw=False, strict_map_key=False)
    if frame.type == "Message":
        message[2] = next(events)
    else:
        message[1] = [[head, next(events)] for head, _ in message[1]]
    return msgpack.packb(message)


def test_fluent_bit_metadata_and_tag_are_kept_in_the_store_not_on_stdout(start_tailer) -> None:
    tailer = start_tailer("--api-auth", "none")
    events = [ev(n) for n in range(1, 8)]
    feed = iter(events)
    relay = next(f for f in load("s14-relay_metadata_ack").frames if f.is_data)  # [[t, md], rec] and [t, rec]
    messages = [f for f in load("s15-relay_metadata_tag_ra").frames if f.type == "Message"]  # `metadata` option
    with Sender("127.0.0.1", tailer.port) as sender:
        sender.sock.sendall(with_audit_events(relay, feed))
        assert msgpack.unpackb(sender.sock.recv(65536)) == {"ack": chunk_of(relay)}
        for frame in messages:
            sender.sock.sendall(with_audit_events(frame, feed))
        sender.send_chunk([next(feed)])  # our forwarder's tag, no metadata: nothing kept beside it
        wait_for(lambda: len(tailer.records()) == len(events), what="every event on stdout")
    assert tailer.records() == events  # stdout: the audit event alone

    def listed() -> list[dict]:
        body = httpx.get(f"http://127.0.0.1:{tailer.http_port}{PREFIX}/events", params={"limit": "100"}).json()
        return body["items"]

    wait_for(lambda: len(listed()) == len(events), what="every event in the store")
    kept = {i["auditID"]: json.loads(i["metadata"]["annotations"][FLUENT_ANNOTATION])
            for i in listed() if FLUENT_ANNOTATION in i["metadata"]["annotations"]}  # every item names its source
    production = {"origin": "capture", "k8s": {"ns": "prod"}}
    assert kept == {
        "id-1": {"tag": "relay.in", "metadata": production},
        "id-2": {"tag": "relay.in", "metadata": {}},  # a [time, record] entry: the tag is not the default
        "id-3": {"tag": "relay.in", "metadata": {}},
        "id-4": {"tag": "audit.alice", "metadata": production},  # Message mode's `metadata` option
        "id-5": {"tag": "audit.bob", "metadata": {}},
        "id-6": {"tag": "audit.zoë", "metadata": {}},
    }
    with sqlite3.connect(f"file:{Path(tailer.args[tailer.args.index('--data-dir') + 1]) / 'audit.db'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT meta FROM audit_events WHERE audit_id = 'id-7'").fetchall() == [(None,)]
