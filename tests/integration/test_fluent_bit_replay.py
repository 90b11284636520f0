"""Fluent Bit's recorded frames, byte for byte, over a real socket to a real tailer process: every record
arrives on stdout as Fluent Bit sent it, and every frame that asked for an ack gets its own `chunk` back.

Handshakes are redone with the tailer's own nonce (a recorded PING only verifies against the recorded
nonce; the sessions replay those exactly in tests/unit/test_fluent_bit_vectors.py); data frames go
verbatim, each in one write as Fluent Bit's are split only by TCP.
"""

from __future__ import annotations

import msgpack

from tests.conftest import wait_for
from tests.helpers.sender import Sender
from tests.helpers.vectors import Case, Frame, chunk_of, expected_entries, load, names

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
