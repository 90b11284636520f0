"""Every recorded Fluent Bit transcript (tests/data/fluent-bit/) replayed through the sans-I/O sessions.

Fluent Bit as the sender (out_forward): our server session, with the nonce the capture tool sent, is fed
Fluent Bit's frames byte by byte; it must authenticate Fluent Bit's PING (or refuse it where the case
refused it), answer the PONG the capture tool answered, decode every entry shape and time encoding
exactly as the capture tool did, keep the metadata, and echo each `chunk` verbatim.
Fluent Bit as the receiver (in_forward): our client session answers Fluent Bit's recorded HELO with a
PING of str fields that verifies with Fluent Bit's key and nonce, accepts Fluent Bit's PONG, and matches
Fluent Bit's acks; our server session also takes what the capture client sent to Fluent Bit.
"""

from __future__ import annotations

import msgpack
import pytest

import fluent_forward as ff
from fluent_forward import NEED_DATA, Acked, Authenticated, AuthRefused, ClientSession, ServerSession, State
from tests.helpers.vectors import Case, chunk_of, expected_entries, load, names

SENDER_CASES = [n for n in names() if n.startswith("s") and load(n).frames]
RECEIVER_CASES = [n for n in names() if n.startswith("r")]


def drain(session: ServerSession | ClientSession) -> list:
    out = []
    while (event := session.next_event()) is not NEED_DATA:
        out.append(event)
        if isinstance(event, (AuthRefused, ff.PeerClosed)):
            break
    return out


def feed(session: ServerSession | ClientSession, data: bytes) -> list:
    events = []
    for i in range(len(data)):  # never assume a frame arrives in one read
        session.receive_data(data[i : i + 1])
        events.extend(drain(session))
    return events


def server_for(case: Case) -> ServerSession:
    p = case.params
    if "helo_nonce" not in p:
        return ServerSession(p.get("capture_hostname", "capture-receiver"))
    nonce = p["helo_nonce"].encode()
    auth = p["helo_auth"].encode()
    return ServerSession(p["capture_hostname"], p["shared_key"], p.get("users_on_capture_side") or None,
                         nonce=nonce, auth_salt=auth)


def check_batch(batch: ff.EventBatch, frame) -> None:
    expected = expected_entries(frame)
    assert [(t, r) for t, r, _ in expected] == batch.entries
    assert [dict(m) for m in batch.metadata] == [m for _, _, m in expected]
    records = batch.records()
    assert list(records) == [r for _, r, _ in expected] and records.metadata == batch.metadata
    assert batch.tag == frame.view[0]


@pytest.mark.parametrize("name", SENDER_CASES)
def test_our_server_session_takes_fluent_bit_out_forward(name: str) -> None:
    case = load(name)
    delivered = 0
    for conn in case.connections():
        if not case.fluent_bit_is_client(conn):
            continue  # (s14/s15 connection 1: the capture tool feeding Fluent Bit's relay input)
        server = server_for(case)
        if server.state is State.AWAIT_PING:
            helo = ff.Decoder().feed(server.data_to_send())[0]
            recorded_helo = ff.Decoder().feed(case.of(conn, "peer")[0].data)[0]
            assert helo.nonce == recorded_helo.nonce  # (our auth salt is empty without users, as Fluentd's)
        refused = False
        for frame in case.of(conn, "fb"):
            if refused:  # s19: after a refusal Fluent Bit sends data on the same connection; we closed
                with pytest.raises(ff.SessionError):
                    server.receive_data(frame.data)
                continue
            events = feed(server, frame.data)
            if frame.type == "PING":
                [event] = events
                reply = ff.Decoder().feed(server.data_to_send())
                recorded = ff.Decoder().feed(next(f.data for f in case.of(conn, "peer") if f.type == "PONG"))
                if case.params.get("fluent_bit_password") == "wrong-password":
                    assert isinstance(event, AuthRefused) and event.reason == "shared_key"
                    assert reply == [ff.Pong(False, "username/password mismatch", "", "")]
                    assert server.state is State.CLOSED
                    refused = True
                else:
                    assert event == Authenticated("fb-sender", case.params.get("fluent_bit_username", ""))
                    if case.params.get("pong_mode") == "correct":
                        assert reply == recorded  # the very PONG Fluent Bit accepted
                continue
            [batch] = events
            assert isinstance(batch, ff.EventBatch)
            check_batch(batch, frame)
            delivered += len(batch.entries)
            chunk = chunk_of(frame)
            assert server.ack(batch) == (chunk is not None)
            ack = server.data_to_send()
            if chunk is not None:
                assert ack == msgpack.packb({"ack": chunk})  # echoed as received, never recomputed
                recorded_acks = [f.data for f in case.of(conn, "peer") if f.type == "ack"]
                assert ack in recorded_acks
    assert delivered == (0 if name.startswith(("s16", "s18", "s19")) else case.params["records_received"])


def fluent_bit_server(case: Case, helo: ff.Helo) -> ff.ServerHandshake:
    return ff.ServerHandshake(case.params["shared_key"], case.params["fluent_bit_self_hostname"],
                              case.params.get("users_on_fluent_bit") or None, nonce=helo.nonce,
                              auth_salt=helo.auth_salt)


@pytest.mark.parametrize("name", RECEIVER_CASES)
def test_our_client_session_answers_fluent_bit_in_forward(name: str) -> None:
    case = load(name)
    fb = case.of(1, "fb")
    helo = ff.Decoder().feed(fb[0].data)[0]
    assert isinstance(helo, ff.Helo) and not helo.auth_salt == b"" and len(helo.nonce) == 16
    users = case.params.get("users_on_fluent_bit") or {}
    username, password = next(iter(users.items()), ("", ""))
    client = ClientSession("capture-client", case.params["shared_key"], username, password)
    assert feed(client, fb[0].data) == [] and client.state is State.AWAIT_PONG
    with pytest.raises(ff.SessionError):
        client.send_chunk("c", b"\xc0")  # never data with (or before) the PING: Fluent Bit drops it (r09)
    ping_bytes = client.data_to_send()
    raw = msgpack.unpackb(ping_bytes, raw=True)
    assert raw[0] == b"PING" and len(raw) == 6
    # every PING field is a msgpack str (Fluent Bit closes on a bin salt, r02)
    assert ping_bytes == b"\x96\xa4PING" + b"".join(_str(field) for field in raw[1:])
    ping = ff.Decoder().feed(ping_bytes)[0]
    assert fluent_bit_server(case, helo).answer(ping)[1] is None  # verifies with Fluent Bit's key


def _str(value: bytes) -> bytes:
    n = len(value)
    return (bytes([0xA0 | n]) if n < 32 else b"\xd9" + bytes([n]) if n < 256 else b"\xda" + n.to_bytes(2, "big")) + value


@pytest.mark.parametrize("name", [n for n in RECEIVER_CASES if n not in ("r02-ping_salt_bin_rejected",
                                                                           "r04-wrong_shared_key", "r10-ping_split_across_writes")])
def test_our_client_session_takes_fluent_bit_pong_and_acks(name: str) -> None:
    """With the capture client's salt and credentials, our PING is the recorded one, and Fluent Bit's
    recorded PONG and acks are accepted (or its refusal reported)."""
    case = load(name)
    creds = case.params["capture_handshake"]
    client = ClientSession("capture-client", creds["key_used"], creds["username"], creds["password"],
                           salt=b"00112233445566778899aabbccddeeff")
    fb = iter(case.of(1, "fb"))
    feed(client, next(fb).data)
    recorded_ping = next(f for f in case.of(1, "peer") if f.type == "PING")
    ours, theirs = msgpack.unpackb(client.data_to_send(), raw=True), msgpack.unpackb(recorded_ping.data, raw=True)
    assert ours[:5] == theirs[:5]  # what Fluent Bit accepted, field for field and type for type
    helo = ff.Decoder().feed(case.of(1, "fb")[0].data)[0]
    assert ours[5].decode() == ff.digest(helo.auth_salt, creds["username"], creds["password"])  # (as out_forward)
    pong = next(fb)
    assert pong.type == "PONG"
    if name.startswith("r07"):
        with pytest.raises(ff.HandshakeError, match="username/password mismatch"):
            feed(client, pong.data)
        return
    assert feed(client, pong.data) == [Authenticated("fb-receiver")]
    after_pong = case.of(1)[case.of(1).index(pong) + 1 :]  # (r09: what came with the PING was dropped)
    for frame in after_pong:
        if frame.sender == "peer" and frame.is_data and chunk_of(frame) is not None:
            client.send_chunk(chunk_of(frame), frame.data)
    acks = [f for f in case.of(1, "fb") if f.type == "ack"]
    for frame in acks:
        assert feed(client, frame.data) == [Acked(msgpack.unpackb(frame.data)["ack"])]


@pytest.mark.parametrize("name", RECEIVER_CASES)
def test_our_server_session_takes_what_the_capture_client_sent(name: str) -> None:
    """The other direction of the r cases: what a client sent to Fluent Bit's in_forward, to our server with
    Fluent Bit's nonce. We are more lenient than in_forward where it loses data (documented in README):
    a bin salt, a PING split over writes, a heartbeat and data pipelined with the PING are accepted."""
    case = load(name)
    helo = ff.Decoder().feed(case.of(1, "fb")[0].data)[0]
    users = case.params.get("users_on_fluent_bit") or None
    server = ServerSession("fb-receiver", case.params["shared_key"], users, nonce=helo.nonce, auth_salt=helo.auth_salt)
    events = feed(server, b"".join(f.data for f in case.of(1, "peer")))
    if name.startswith(("r04", "r07")):
        assert isinstance(events[0], AuthRefused) and server.state is State.CLOSED
        return
    assert isinstance(events[0], Authenticated)
    batches = [e for e in events if isinstance(e, ff.EventBatch)]
    data = [f for f in case.of(1, "peer") if f.is_data]
    assert len(batches) == len(data)
    for batch, frame in zip(batches, data, strict=True):
        check_batch(batch, frame)
        if chunk_of(frame) is not None:
            assert server.ack(batch)
    ours = [m for m in ff.Decoder().feed(server.data_to_send()) if isinstance(m, ff.Ack)]
    assert ours == [ff.Ack(chunk_of(f)) for f in data if chunk_of(f) is not None]
    fluent_bits = [ff.Decoder().feed(f.data)[0] for f in case.of(1, "fb") if f.type == "ack"]
    assert set(fluent_bits) <= set(ours)  # we also ack what in_forward dropped (r09)


def test_every_recorded_case_is_replayed() -> None:
    assert len(SENDER_CASES) + len(RECEIVER_CASES) == len(names()) - 1  # s07: Fluent Bit refuses the config
    assert load("s07-time_as_integer_gzip").frames == []
