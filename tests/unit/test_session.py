"""The sans-I/O sessions, byte by byte: handshake order, ack window, the error state."""

from __future__ import annotations

import pytest

import fluent_forward as ff
from fluent_forward import (
    NEED_DATA,
    Acked,
    Authenticated,
    AuthRefused,
    ClientSession,
    EventBatch,
    PeerClosed,
    ServerSession,
    SessionError,
    State,
)

T = ff.EventTime(1_763_629_200, 5)


def chunk(cid: str, n: int = 3) -> bytes:
    packed = b"".join(ff.encode_entry(T, {"c": cid, "i": i}) for i in range(n))
    return ff.encode_packed_forward("audit", packed, chunk=cid, size=n)


def events(session: ServerSession | ClientSession, data: bytes, bytewise: bool = True) -> list:
    out = []
    pieces = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for piece in pieces:
        session.receive_data(piece)
        while (event := session.next_event()) is not NEED_DATA:
            out.append(event)
    return out


def shake(server: ServerSession, client: ClientSession) -> None:
    """Run the handshake between the two sessions, every byte on its own."""
    assert events(client, server.data_to_send()) == []  # HELO -> the client queues its PING
    server_side = events(server, client.data_to_send())
    assert [type(e) for e in server_side] == [Authenticated]
    assert events(client, server.data_to_send()) == [Authenticated("tailer-0")]


def test_no_shared_key_is_ready_at_once_and_acks_in_order() -> None:
    server, client = ServerSession(), ClientSession()
    assert server.state is client.state is State.READY and server.data_to_send() == b""
    for cid in ("a", "b", "c"):
        client.send_chunk(cid, chunk(cid))
    batches = events(server, client.data_to_send())
    assert [b.options.chunk for b in batches] == ["a", "b", "c"]
    assert all(isinstance(b, EventBatch) and len(b.entries) == 3 for b in batches)
    assert list(client.in_flight) == ["a", "b", "c"]
    for batch in batches:
        assert server.ack(batch)
    assert events(client, server.data_to_send()) == [Acked("a"), Acked("b"), Acked("c")]
    assert not client.in_flight


def test_shared_key_handshake_byte_by_byte_then_data() -> None:
    server = ServerSession("tailer-0", "k")
    client = ClientSession("fwd-0", "k")
    assert server.state is State.AWAIT_PING and client.state is State.AWAIT_HELO
    with pytest.raises(SessionError):
        client.send_chunk("x", chunk("x"))  # nothing before the handshake
    shake(server, client)
    assert server.state is client.state is State.READY
    client.send_chunk("x", chunk("x"))
    [batch] = events(server, client.data_to_send())
    server.ack(batch)
    assert events(client, server.data_to_send()) == [Acked("x")]


def test_wrong_key_refused_with_a_pong_then_closed() -> None:
    server = ServerSession("tailer-0", "right")
    client = ClientSession("fwd-0", "wrong")
    events(client, server.data_to_send())
    [refused] = events(server, client.data_to_send())
    assert refused == AuthRefused("shared_key", "shared_key mismatch", "fwd-0")
    assert server.state is State.CLOSED
    with pytest.raises(ff.HandshakeError, match="shared_key mismatch"):
        events(client, server.data_to_send())
    assert client.state is State.ERROR
    with pytest.raises(SessionError):
        server.receive_data(b"more")  # a refused session takes no more data


def test_data_before_the_ping_is_refused_as_no_ping() -> None:
    server = ServerSession("tailer-0", "k")
    [refused] = events(server, chunk("x"))
    assert refused.reason == "no_ping" and "EventBatch" in refused.detail


def test_eof_before_the_ping_and_in_the_middle_of_a_message() -> None:
    server = ServerSession("tailer-0", "k")
    server.receive_data(b"")
    assert server.next_event() == PeerClosed() and server.state is State.AWAIT_PING
    other = ServerSession()
    assert events(other, chunk("x")[:10]) == []
    other.receive_data(b"")
    assert other.next_event() == PeerClosed(truncated=True)


def test_ack_for_another_chunk_is_an_error_state() -> None:
    client = ClientSession()
    client.send_chunk("a", chunk("a"))
    with pytest.raises(ff.ProtocolError) as err:
        events(client, ff.encode_ack("b"))
    assert err.value.reason == "unexpected_ack" and client.state is State.ERROR
    with pytest.raises(SessionError):
        client.receive_data(ff.encode_ack("a"))


def test_ack_with_nothing_in_flight_is_an_error() -> None:
    with pytest.raises(ff.ProtocolError, match="unexpected chunk"):
        events(ClientSession(), ff.encode_ack("a"))


def test_helo_to_a_client_without_a_key_says_what_to_set() -> None:
    with pytest.raises(ff.HandshakeError, match="set --shared-key"):
        events(ClientSession(), ServerSession("s", "k").data_to_send())


def test_server_refuses_handshake_messages_after_the_handshake() -> None:
    server = ServerSession()
    with pytest.raises(ff.ProtocolError) as err:
        events(server, ff.encode_ping(ff.Ping("h", b"s", "d")))
    assert err.value.reason == "unexpected_message" and server.state is State.ERROR


def test_client_wants_helo_then_pong() -> None:
    client = ClientSession("c", "k")
    with pytest.raises(ff.HandshakeError, match="expected HELO"):
        events(client, ff.encode_ack("x"))
    client = ClientSession("c", "k")
    events(client, ServerSession("s", "k").data_to_send())
    with pytest.raises(ff.HandshakeError, match="expected PONG"):
        events(client, ff.HEARTBEAT)


def test_batches_before_a_bad_frame_are_still_returned() -> None:
    server = ServerSession()
    server.receive_data(chunk("a") + b"\xc1")
    assert isinstance(server.next_event(), EventBatch)
    with pytest.raises(ff.ProtocolError):
        server.next_event()
    assert server.state is State.ERROR and server.next_event() is NEED_DATA


def test_heartbeats_pass_on_the_server_and_are_skipped_on_the_client() -> None:
    assert events(ServerSession(), ff.HEARTBEAT) == [ff.Heartbeat()]
    client = ClientSession()
    client.send_chunk("a", chunk("a"))
    assert events(client, ff.HEARTBEAT + ff.encode_ack("a")) == [Acked("a")]


def test_pong_of_a_server_without_our_key_fails_the_client() -> None:
    client = ClientSession("c", "k")
    events(client, ServerSession("s", "k").data_to_send())
    forged = ff.encode_pong(ff.Pong(True, "", "s", "00" * 64))
    with pytest.raises(ff.HandshakeError, match="shared_key mismatch"):
        events(client, forged)


def _decoded(data: bytes) -> list:
    import msgpack

    return msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape")  # bin would stay bytes


def test_every_handshake_field_we_send_is_a_msgpack_str() -> None:
    """Fluent Bit's in_forward closes the connection on a bin salt, out_forward wants str digests."""
    server = ServerSession("tailer-0", "k", {"alice": "pw"})
    client = ClientSession("fwd-0", "k", "alice", "pw", salt=bytes(range(200, 216)))  # raw, not UTF-8
    helo = server.data_to_send()
    _tag, options = _decoded(helo)
    assert all(isinstance(options[k], str) for k in ("nonce", "auth")) and options["keepalive"] is True
    events(client, helo)
    ping = client.data_to_send()
    assert all(isinstance(field, str) for field in _decoded(ping))
    assert events(server, ping)[0] == Authenticated("fwd-0", "alice")  # the raw salt survives as str
    pong = _decoded(server.data_to_send())
    assert pong[1] is True and all(isinstance(pong[i], str) for i in (0, 2, 3, 4))
    refusing = ServerSession("tailer-0", "other-key")
    other = ClientSession("fwd-0", "k")
    events(other, refusing.data_to_send())
    events(refusing, other.data_to_send())
    assert _decoded(refusing.data_to_send()) == ["PONG", False, "shared_key mismatch", "", ""]


def test_users_both_ways() -> None:
    for password, ok in (("pw", True), ("nope", False)):
        server = ServerSession("tailer-0", "k", {"alice": "pw"})
        client = ClientSession("fwd-0", "k", "alice", password)
        events(client, server.data_to_send())
        [event] = events(server, client.data_to_send())
        assert isinstance(event, Authenticated if ok else AuthRefused)
        if ok:
            assert events(client, server.data_to_send()) == [Authenticated("tailer-0")]
        else:
            with pytest.raises(ff.HandshakeError, match="username/password mismatch"):
                events(client, server.data_to_send())


def test_fluentd_style_helo_bin_nonce_and_no_auth_and_a_bin_pong_digest() -> None:
    import msgpack

    client = ClientSession("fwd-0", "k")
    helo = msgpack.packb(["HELO", {"nonce": b"N" * 16, "auth": b"", "keepalive": True}], use_bin_type=True)
    events(client, helo)
    ping = ff.Decoder().feed(client.data_to_send())[0]
    assert ping.password_digest == ""
    digest = ff.digest(ping.shared_key_salt, "srv", b"N" * 16, "k")
    pong = msgpack.packb(["PONG", True, "", "srv", digest.encode()], use_bin_type=True)  # digest as bin
    assert events(client, pong) == [Authenticated("srv")]


def test_users_file_format(tmp_path) -> None:
    from tailer.cli import read_users  # (the flag itself: tests/integration/test_fluent_bit_replay.py)

    path = tmp_path / "users"
    path.write_text("# Fluent Bit's security.users\nalice s3cret-pass\n\nbob  two words\n")
    assert read_users(str(path)) == {"alice": "s3cret-pass", "bob": "two words"}
    path.write_text("alice\n")
    with pytest.raises(ValueError, match="expected 'USER PASSWORD'"):
        read_users(str(path))


def test_our_nonces_and_salts_are_16_printable_bytes_like_fluent_bits() -> None:
    server, client = ServerSession("s", "k", {"u": "p"}), ClientSession("c", "k", "u", "p")
    helo = ff.Decoder().feed(server.data_to_send())[0]
    events(client, ServerSession("s", "k").data_to_send())
    ping = ff.Decoder().feed(client.data_to_send())[0]
    for value in (helo.nonce, helo.auth_salt, ping.shared_key_salt):
        assert len(value) == 16 and value.decode("ascii").isprintable()
    assert len({ServerSession("s", "k").data_to_send() for _ in range(20)}) == 20  # fresh every time
