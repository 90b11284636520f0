from __future__ import annotations

import fluent_forward as ff
from fluent_forward import ClientHandshake, Decoder, HandshakeError, ServerHandshake


def run(server: ServerHandshake, client: ClientHandshake) -> tuple[str | None, ff.Pong]:
    helo = Decoder().feed(server.helo())[0]
    assert isinstance(helo, ff.Helo)
    ping = Decoder().feed(client.ping(helo))[0]
    assert isinstance(ping, ff.Ping)
    pong_bytes, failure = server.answer(ping)
    pong = Decoder().feed(pong_bytes)[0]
    assert isinstance(pong, ff.Pong)
    return failure, pong


def test_matching_keys_authenticate_both_ways() -> None:
    client = ClientHandshake("s3cret", "forwarder-0")
    failure, pong = run(ServerHandshake("s3cret", "tailer-0"), client)
    assert failure is None and pong.auth_ok
    client.check(pong)  # the server proved it knows the key too


def test_known_digest_vector() -> None:
    # sha512(salt + hostname + nonce + key), computed independently with hashlib
    import hashlib

    server = ServerHandshake("k", "srv", nonce=b"N" * 16)
    client = ClientHandshake("k", "cli", salt=b"S" * 16)
    ping = Decoder().feed(client.ping(Decoder().feed(server.helo())[0]))[0]  # type: ignore[arg-type]
    assert ping.shared_key_digest == hashlib.sha512(b"S" * 16 + b"cli" + b"N" * 16 + b"k").hexdigest()


def test_wrong_key_is_refused_with_reason() -> None:
    failure, pong = run(ServerHandshake("right", "tailer-0"), ClientHandshake("wrong", "forwarder-0"))
    assert failure == "shared_key mismatch" and not pong.auth_ok
    try:
        ClientHandshake("wrong", "forwarder-0").check(pong)
    except HandshakeError as exc:
        assert "shared_key mismatch" in str(exc) or "PONG before HELO" in str(exc)


def test_client_detects_a_server_without_the_key() -> None:
    client = ClientHandshake("k", "cli")
    helo = Decoder().feed(ServerHandshake("k", "srv").helo())[0]
    client.ping(helo)  # type: ignore[arg-type]
    forged = ff.Pong(auth_ok=True, reason="", hostname="srv", shared_key_digest="00" * 64)
    try:
        client.check(forged)
        raise AssertionError("forged PONG accepted")
    except HandshakeError as exc:
        assert "shared_key mismatch" in str(exc)


def test_username_and_password() -> None:
    users = {"fwd": "pw"}
    ok, _ = run(ServerHandshake("k", "srv", users), ClientHandshake("k", "cli", "fwd", "pw"))
    bad, pong = run(ServerHandshake("k", "srv", users), ClientHandshake("k", "cli", "fwd", "nope"))
    assert ok is None and bad == "username/password mismatch" and not pong.auth_ok
