"""Tamper evidence (issue 12) on a real tailer: hand-built chained chunks (the contract module and the
fluent_forward encoders), the chain checked on receipt, and ``kubectl audit verify`` over what was stored."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgpack
import orjson
import pytest

import fluent_forward as ff
from kube_audit.contract import PREFIX
from kube_audit.model import chain
from kube_audit.model.source import OPTION, STATUS_TAG
from kubectl_audit.cli import main as kubectl_audit
from tests.conftest import wait_for
from tests.helpers.sender import Sender
from tests.integration.test_store import ev

KEY = "chain-test-key"


def chained(sender: Sender, records: list[dict[str, Any]], seq: int, prev: bytes, *, source: str = "apiserver-0",
            cluster: str = "prod", tag: str = "audit", key: str = KEY, bad_mac: bool = False) -> bytes:
    """Send one CompressedPackedForward chunk carrying the ``kube_audit`` option with its chain; wait
    for its ack; return its MAC (the next chunk's prev)."""
    payload = b"".join(ff.encode_entry(ff.EventTime(1_763_629_200, i), r) for i, r in enumerate(records))
    chunk = uuid.uuid4().hex
    message = msgpack.unpackb(ff.encode_packed_forward(tag, payload, chunk=chunk, size=len(records), compress=True),
                              raw=False)
    mac = chain.chunk_mac(key.encode(), cluster, source, tag, seq, prev, message[1])
    message[2][OPTION] = {"source": source, "cluster": cluster, "seq": seq, "prev": prev,
                          "mac": bytes(32) if bad_mac else mac}
    sender.sock.sendall(msgpack.packb(message, use_bin_type=True))
    assert sender.receive() == ff.Ack(chunk)
    return mac


def mac(n: int) -> bytes:
    return bytes([n]) * 32


def events(first: int, n: int) -> list[dict[str, Any]]:
    return [ev(i, ts=f"2026-11-20T09:{i // 60 % 60:02d}:{i % 60:02d}.000000Z") for i in range(first, first + n)]


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.yaml"
    path.write_text("- {token: admin-token, user: admin, namespaces: ['*']}\n")
    return path


def start(start_tailer: Any, tokens: Path, target: str | None = None, *args: str) -> Any:
    store = ["--store", target] if target and target.startswith("postgresql") else []
    return start_tailer("--shared-key", KEY, "--token-file", str(tokens), "--stdout", "false", *store, *args)


def verify(tailer: Any, capsys: Any, *args: str) -> tuple[int, str, dict[str, Any]]:
    server = ["--server", f"http://127.0.0.1:{tailer.http_port}", "--token", "admin-token"]
    code = kubectl_audit(["verify", *server, *args])
    out = capsys.readouterr().out
    assert kubectl_audit(["verify", *server, "-o", "json", *args]) == code
    return code, out, orjson.loads(capsys.readouterr().out)


def send_three(tailer: Any) -> list[bytes]:
    macs, prev = [], chain.GENESIS
    with Sender("127.0.0.1", tailer.port, shared_key=KEY) as s:
        for seq in (1, 2, 3):
            prev = chained(s, events(seq * 10, 3), seq, prev)
            macs.append(prev)
    return macs


def sql(target: str, statement: str, *args: Any) -> None:
    if target.startswith("postgresql"):
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(statement.replace("?", "%s"), args)
        return
    conn = sqlite3.connect(target)
    try:
        conn.execute(statement, args)
        conn.commit()
    finally:
        conn.close()


def breaks(tailer: Any) -> float:
    return sum(tailer.metric("tailer_chain_breaks_total", kind=k)
               for k in ("missing", "prev_mismatch", "bad_mac", "restarted"))


def test_an_in_order_chain_verifies_clean(start_tailer, tokens, store_target, capsys) -> None:
    tailer = start(start_tailer, tokens, store_target)
    send_three(tailer)
    code, out, body = verify(tailer, capsys)
    assert code == 0, out
    assert "verified 3 links, 9 rows: clean" in out
    assert body["clean"] and body["problems"] == [] and body["breaks"] == []
    assert tailer.metric("tailer_chain_chunks_total", outcome="in_order") == 3
    assert breaks(tailer) == 0


def test_a_resend_after_a_forwarder_restart_is_not_a_break(start_tailer, tokens, tmp_path, capsys) -> None:
    tailer = start(start_tailer, tokens)
    with Sender("127.0.0.1", tailer.port, shared_key=KEY) as s:
        one = chained(s, events(0, 3), 1, chain.GENESIS)
        chained(s, events(3, 2), 2, one)  # stored, but the forwarder never saw the ack
        chained(s, events(0, 3), 1, chain.GENESIS)  # an exact resend: known
    with Sender("127.0.0.1", tailer.port, shared_key=KEY) as s:  # restarted from its checkpoint (seq 1)
        two = chained(s, events(3, 4), 2, one)  # the same seq and prev, other boundaries
        chained(s, events(7, 2), 3, two)
    code, out, body = verify(tailer, capsys)
    assert code == 0, out
    assert tailer.metric("tailer_chain_chunks_total", outcome="resend") == 1
    assert tailer.metric("tailer_chain_chunks_total", outcome="resend_after_restart") == 1
    assert breaks(tailer) == 0 and not [e for e in tailer.logs() if e.get("event") == "chain_break"]
    assert body["checked"]["rows"] == 3 + 2 + 3 + 4 + 2  # every event of every chunk, repeats included


def test_out_of_order_delivery_is_no_break_and_a_late_link_resolves_one(start_tailer, tokens, capsys) -> None:
    tailer = start(start_tailer, tokens, None, "--chain-grace", "200ms")
    with Sender("127.0.0.1", tailer.port, shared_key=KEY) as a, Sender("127.0.0.1", tailer.port, shared_key=KEY) as b:
        one = chained(a, events(10, 2), 1, chain.GENESIS)
        two_mac = mac_of(events(20, 2), 2, one)
        three = chained(b, events(30, 2), 3, two_mac)  # the new connection's chunk overtakes seq 2
        wait_for(lambda: breaks(tailer) == 1, what="the gap found after the grace period")
        (gap,) = [e for e in tailer.logs() if e.get("event") == "chain_break"]
        assert (gap["kind"], gap["first_seq"], gap["last_seq"], gap["reason"]) == ("missing", 2, 2, "chain_break")
        wait_for(lambda: source_gaps(tailer) == ["chain:1:2-2:missing"], what="the break as a gap of its source")
        chained(a, events(20, 2), 2, one)  # the late one arrives
        chained(b, events(40, 2), 4, three)
    code, out, _ = verify(tailer, capsys)
    assert code == 0, out
    db = Path(tailer.args[tailer.args.index("--data-dir") + 1]) / "audit.db"
    rows = sqlite3.connect(db).execute("SELECT first_seq, resolved FROM audit_chain_breaks").fetchall()
    assert len(rows) == 1 and rows[0][0] == 2 and rows[0][1] is not None  # resolved ...
    wait_for(lambda: source_gaps(tailer) == [], what="the gap taken back")  # ... and no longer a gap
    assert [e["first_seq"] for e in tailer.logs() if e.get("event") == "chain_break_resolved"] == [2]


def test_a_late_link_that_fills_part_of_a_break_leaves_the_rest_as_the_gap(start_tailer, tokens) -> None:
    tailer = start(start_tailer, tokens, None, "--chain-grace", "200ms")
    with Sender("127.0.0.1", tailer.port, shared_key=KEY) as a:
        one = chained(a, events(10, 2), 1, chain.GENESIS)
        two = mac_of(events(20, 2), 2, one)
        three = mac_of(events(30, 2), 3, two)
        chained(a, events(40, 2), 4, three)  # 2 and 3 never came (yet)
        wait_for(lambda: source_gaps(tailer) == ["chain:1:2-3:missing"], what="the break 2-3 as a gap")
        chained(a, events(20, 2), 2, one)  # 2 comes late; 3 stays missing
    wait_for(lambda: source_gaps(tailer) == ["chain:1:3-3:missing"], what="only 3 left missing")
    assert breaks(tailer) == 1  # the rest of a break is not a second one


def source_gaps(tailer: Any, name: str = "apiserver-0") -> list[str] | None:
    resp = httpx.get(f"http://127.0.0.1:{tailer.http_port}{PREFIX}/sources/{name}", timeout=10,
                     headers={"Authorization": "Bearer admin-token"})
    if resp.status_code != 200:
        return None
    return [g["id"] for g in resp.json().get("gaps", []) if g.get("reason") == "chain_break"]


def test_chunks_out_of_order_within_the_grace_period_are_never_a_break(start_tailer, tokens, capsys) -> None:
    tailer = start(start_tailer, tokens)  # the default grace (30 s): the late chunk comes long before
    with Sender("127.0.0.1", tailer.port, shared_key=KEY) as a, Sender("127.0.0.1", tailer.port, shared_key=KEY) as b:
        one = chained(a, events(10, 2), 1, chain.GENESIS)
        chained(b, events(30, 2), 3, mac_of(events(20, 2), 2, one))
        chained(a, events(20, 2), 2, one)
    assert tailer.metric("tailer_chain_chunks_total", outcome="out_of_order") == 1
    code, out, _ = verify(tailer, capsys)
    assert code == 0, out
    assert breaks(tailer) == 0


def test_a_dropped_chunk_and_a_bad_mac_are_breaks(start_tailer, tokens, capsys) -> None:
    tailer = start(start_tailer, tokens, None, "--chain-grace", "200ms")
    with Sender("127.0.0.1", tailer.port, shared_key=KEY) as s:
        one = chained(s, events(10, 2), 1, chain.GENESIS)
        three = chained(s, events(30, 2), 3, mac_of(events(20, 2), 2, one))  # seq 2 was lost on the way
        chained(s, events(40, 2), 4, three, bad_mac=True)  # altered on the way: stored, flagged
        chained(s, events(50, 1), 7, mac(7), source="apiserver-1")  # first seen at 7: where its chain starts here
    wait_for(lambda: breaks(tailer) == 2, what="both breaks")
    found = {(e["kind"], e["first_seq"]) for e in tailer.logs() if e.get("event") == "chain_break"}
    assert found == {("missing", 2), ("bad_mac", 4)}
    code, out, body = verify(tailer, capsys)
    assert code == 1
    assert {(b["kind"], b["seq"]) for b in body["breaks"]} == {("missing", 3), ("bad_mac", 4)}
    assert body["problems"] == [] and "chain breaks" in out
    assert body["checked"]["rows"] == 7  # the chunk with the bad MAC is stored all the same

    def reasons() -> list[str]:
        resp = httpx.get(f"http://127.0.0.1:{tailer.http_port}{PREFIX}/sources/apiserver-0", timeout=10,
                         headers={"Authorization": "Bearer admin-token"})
        return [g["reason"] for g in resp.json().get("gaps", [])] if resp.status_code == 200 else []

    wait_for(lambda: reasons() == ["chain_break", "chain_break"], what="both breaks as gaps of the source")


def mac_of(records: list[dict[str, Any]], seq: int, prev: bytes) -> bytes:
    payload = b"".join(ff.encode_entry(ff.EventTime(1_763_629_200, i), r) for i, r in enumerate(records))
    entries = msgpack.unpackb(ff.encode_packed_forward("audit", payload, chunk="x", size=len(records),
                                                       compress=True), raw=False)[1]
    return chain.chunk_mac(KEY.encode(), "prod", "apiserver-0", "audit", seq, prev, entries)


def store_of(tailer: Any, target: str) -> str:
    if target.startswith("postgresql"):
        return target
    return str(Path(tailer.args[tailer.args.index("--data-dir") + 1]) / "audit.db")


def row_of(target: str, audit_id: str) -> int:
    if target.startswith("postgresql"):
        import psycopg

        with psycopg.connect(target) as conn:
            found = conn.execute("SELECT seq FROM audit_events WHERE audit_id = %s", (audit_id,)).fetchone()
    else:
        conn = sqlite3.connect(target)
        found = conn.execute("SELECT seq FROM audit_events WHERE audit_id = ?", (audit_id,)).fetchone()
        conn.close()
    assert found is not None
    return int(found[0])


TAMPER = {
    "update": "UPDATE audit_events SET event = ? WHERE seq = ?",
    "delete": "DELETE FROM audit_events WHERE seq = ?",
    "insert": "INSERT INTO audit_events (hw, audit_id, stage, ts, verb, level, username, api_group, resource, "
              "namespace, name, subresource, code, dry, bytes, event) SELECT hw, 'forged', stage, ts + 1, verb, "
              "level, username, api_group, resource, namespace, name, subresource, code, dry, bytes, event "
              "FROM audit_events WHERE seq = ?",
}


@pytest.mark.parametrize("how", ["update", "delete", "insert"])
def test_one_tampered_row_makes_verify_fail_naming_it(start_tailer, tokens, store_target, capsys, how) -> None:
    tailer = start(start_tailer, tokens, store_target)
    send_three(tailer)
    target = store_of(tailer, store_target)
    seq = row_of(target, "id-21")  # the middle chunk's second event
    forged = orjson.dumps({**ev(21), "user": {"username": "someone-else"}})
    sql(target, TAMPER[how], *((forged, seq) if how == "update" else (seq,)))
    code, out, body = verify(tailer, capsys)
    assert code == 1, out
    first = body["problems"][0]
    if how == "insert":
        assert (first["kind"], first["auditID"]) == ("inserted", "forged")
        assert first["row"] == row_of(target, "forged") and "(forged) is in no link" in out
    else:
        assert (first["kind"], first["row"], first["seq"], first["source"]) == (
            {"update": "altered", "delete": "deleted"}[how], seq, 2, "apiserver-0")
        assert f"row {seq}" in out.splitlines()[1]
    assert len(body["problems"]) == 1 and body["breaks"] == []


def test_an_edited_link_is_found(start_tailer, tokens, capsys) -> None:
    tailer = start(start_tailer, tokens)
    send_three(tailer)
    target = store_of(tailer, "sqlite")
    sql(target, "UPDATE audit_chain SET digests = ? WHERE seq = 2", bytes(16 * 3))  # digests to hide an edit
    code, _, body = verify(tailer, capsys)
    assert code == 1 and body["problems"][0]["kind"] == "linkAltered" and body["problems"][0]["seq"] == 2
    sql(target, "DELETE FROM audit_chain WHERE seq = 2")  # and the whole link, rows and all
    sql(target, "DELETE FROM audit_events WHERE audit_id IN ('id-20', 'id-21', 'id-22')")
    code, _, body = verify(tailer, capsys)
    assert code == 1 and body["problems"][0]["kind"] == "linkMissing"
    assert {(b["kind"], b["seq"]) for b in body["breaks"]} == {("missing", 3)}


def test_verify_is_clean_after_retention_ran(start_tailer, tokens, store_target, capsys) -> None:
    tailer = start(start_tailer, tokens, store_target, "--retention-bytes", "2Ki", "--retention-interval", "1s")
    prev = chain.GENESIS
    with Sender("127.0.0.1", tailer.port, shared_key=KEY) as s:
        for seq in range(1, 9):
            prev = chained(s, events(seq * 10, 3), seq, prev)
    wait_for(lambda: tailer.metric("tailer_store_pruned_total", reason="size") > 0, what="retention")
    code, out, body = verify(tailer, capsys)
    assert code == 0, out
    assert 0 < body["checked"]["links"] < 8  # the links whose rows are all gone went with them
    target = store_of(tailer, store_target)
    seq = row_of(target, "id-81")  # kept (the newest): deleting it is still found
    sql(target, TAMPER["delete"], seq)
    code, _, body = verify(tailer, capsys)
    assert code == 1 and (body["problems"][0]["kind"], body["problems"][0]["row"]) == ("deleted", seq)


def test_a_chained_status_chunk_keeps_its_place_in_the_chain(start_tailer, tokens, capsys) -> None:
    """Status records (the sources stage's tag) store no events; their chunk is still a link of the chain."""
    tailer = start(start_tailer, tokens, None, "--chain-grace", "200ms")
    status = {"kind": "ForwarderStatus", "source": "apiserver-0", "cluster": "prod"}
    with Sender("127.0.0.1", tailer.port, shared_key=KEY) as s:
        one = chained(s, events(10, 2), 1, chain.GENESIS)
        two = chained(s, [status], 2, one, tag=STATUS_TAG)
        chained(s, events(30, 2), 3, two)
        chained(s, events(40, 1), 9, mac(8), source="sentinel")
        chained(s, events(41, 1), 11, mac(10), source="sentinel")  # seq 10 lost: a break, found by the scan
    wait_for(lambda: breaks(tailer) >= 1, what="the sentinel's break")
    assert breaks(tailer) == 1  # the scan that found it saw the status chunk in apiserver-0's chain
    code, _, body = verify(tailer, capsys)
    assert code == 1 and [(b["source"], b["seq"]) for b in body["breaks"]] == [("sentinel", 11)]
    assert body["problems"] == [] and body["checked"]["rows"] == 6


def test_retention_at_start_up_is_recorded(start_tailer, tokens, tmp_path, capsys) -> None:
    """Retention right at start-up (a restarted tailer, a lower --retention-bytes) is recorded too: the
    chain has its key before retention first runs."""
    data = str(tmp_path / "kept")
    first = start(start_tailer, tokens, None, "--data-dir", data)
    prev = chain.GENESIS
    with Sender("127.0.0.1", first.port, shared_key=KEY) as s:
        for seq in range(1, 9):
            prev = chained(s, events(seq * 10, 3), seq, prev)
    first.stop()
    second = start(start_tailer, tokens, None, "--data-dir", data, "--retention-bytes", "2Ki")
    wait_for(lambda: second.metric("tailer_store_pruned_total", reason="size") > 0, what="retention at start-up")
    code, out, _ = verify(second, capsys)
    assert code == 0, out
