"""Poison records: a valid map of an unexpected shape never stalls the stream (issue 15).

Each such record is acked, kept raw (stdout and the rejected-records file), counted by reason and
logged once per reason; the events around it are stored. Before, the first of these made a sink raise,
the chunk was never acked and the forwarder resent it forever. Also: a record the database itself
refuses for good (a deterministic error) is rejected alone; a transient one still means no ack.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest

import fluent_forward as ff
from kube_audit.contract import PREFIX
from tests.conftest import wait_for
from tests.helpers.sender import Sender


def event(audit_id: str, **kw: Any) -> dict[str, Any]:
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": audit_id,
            "stage": "ResponseComplete", "verb": "get", "requestURI": "/api/v1/namespaces/shop/pods/p",
            "user": {"username": "alice", "groups": ["system:authenticated"]},
            "objectRef": {"resource": "pods", "namespace": "shop", "name": "p", "apiVersion": "v1"},
            "responseStatus": {"code": 200}, "stageTimestamp": "2026-11-20T09:00:00.000000Z", **kw}


def nested(levels: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(levels - 1):
        out = {"a": out}
    return out


POISON = [  # (auditID, expected reason, record)
    ("p-user", "bad_shape", event("p-user", user="bob")),
    ("p-ref", "bad_shape", event("p-ref", objectRef="x")),
    ("p-status", "bad_shape", event("p-status", responseStatus=5)),
    ("p-groups", "bad_shape", event("p-groups", user={"username": "u", "groups": 5})),
    ("p-code", "bad_code", event("p-code", responseStatus={"code": 2**63})),
    ("p-nul", "nul_in_field", event("p-nul", user={"username": "a\x00b"})),
    ("p-nan", "non_finite_number", event("p-nan", stageTimestamp=float("nan"))),
    ("p-inf", "non_finite_number", event("p-inf", requestReceivedTimestamp=float("inf"))),
    ("p-keys", "non_string_key", event("p-keys", requestObject={1: "a", b"k": "v"})),
    ("p-surrogate", "invalid_unicode", event("p-surrogate", user={"username": "SURROGATE1"})),
    ("p-deep", "too_deep", event("p-deep", requestObject=nested(300))),
    ("p-long", "field_too_long", event("p-long", objectRef={"resource": "pods", "name": "x" * 5000})),
]


def send_raw(sender: Sender, records: list[dict[str, Any]]) -> None:
    """Like Sender.send_chunk, but the string "SURROGATE1" goes out as invalid UTF-8 (msgpack would not
    encode a lone surrogate), as a forwarder reading a corrupt log line would send it."""
    packed = b"".join(ff.encode_entry(ff.EventTime(1_763_629_200, i), r) for i, r in enumerate(records))
    packed = packed.replace(msgpack.packb("SURROGATE1"), msgpack.packb("SURROGATE1")[:-2] + b"\xff1")
    chunk = uuid.uuid4().hex
    sender.sock.sendall(ff.encode_packed_forward("audit", packed, chunk=chunk, size=len(records)))
    assert sender.receive() == ff.Ack(chunk)


def stored(tailer: Any) -> list[str]:
    body = httpx.get(f"http://127.0.0.1:{tailer.http_port}{PREFIX}/events", params={"limit": 1000}, timeout=10)
    assert body.status_code == 200, body.text
    return [e["auditID"] for e in body.json()["items"]]


@pytest.fixture
def tailer(start_tailer, store_target: str, tmp_path: Path) -> Any:
    store = ["--store", store_target] if store_target.startswith("postgresql") else []
    t = start_tailer("--api-auth", "none", "--rejected-file", str(tmp_path / "rejected.jsonl"), *store)
    t.rejected_path = tmp_path / "rejected.jsonl"
    t.store_target = store_target
    return t


def test_poison_records_are_acked_kept_raw_and_counted(tailer: Any) -> None:
    with Sender("127.0.0.1", tailer.port) as sender:
        send_raw(sender, [event("g1"), *(r for _, _, r in POISON), event("g2")])
        sender.send_chunk([event("g3")])  # the stream goes on
    assert stored(tailer) == ["g1", "g2", "g3"]
    lines = [json.loads(line) for line in tailer.rejected_path.read_text().splitlines()]
    assert [(r["record"].get("auditID"), r["reason"]) for r in lines] == [(a, reason) for a, reason, _ in POISON]
    assert all(r["detail"] and r["time"].endswith("Z") for r in lines)
    assert lines[0]["record"]["user"] == "bob"  # kept raw
    reasons = {reason for _, reason, _ in POISON}
    for reason in reasons:
        want = sum(1 for _, r, _ in POISON if r == reason)
        assert tailer.metric("tailer_records_rejected_total", reason=reason) == want, reason
    logged = [e for e in tailer.logs() if e["event"] == "record_rejected"]
    assert sorted(e["reason"] for e in logged) == sorted(reasons)  # once per reason
    out = tailer.stdout_path.read_bytes().splitlines()
    assert len(out) == len(POISON) + 3  # every record printed, the rejected ones as received
    assert tailer.metric("tailer_sink_errors_total", sink="store") == 0
    assert "Traceback" not in tailer.stderr()


def test_a_record_the_database_refuses_for_good_is_rejected_alone(tailer: Any, tmp_path: Path) -> None:
    """A deterministic database error (the data, not the database's state) used to hold the whole chunk
    back forever; now the one record is rejected (store_refused) and the others are stored."""
    target = tailer.store_target
    if target.startswith("postgresql"):
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            wait_for(lambda: conn.execute("SELECT to_regclass('audit_events')").fetchone()[0], what="schema")
            conn.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                         "IF NEW.audit_id = 'bad' THEN RAISE EXCEPTION 'refused' USING ERRCODE = '22023'; END IF; "
                         "RETURN NEW; END $$")
            conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse()")
    else:
        db = Path(tailer.args[tailer.args.index("--data-dir") + 1]) / "audit.db"
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON audit_events WHEN NEW.audit_id = 'bad' "
                         "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    with Sender("127.0.0.1", tailer.port) as sender:
        sender.send_chunk([event("g1"), event("bad"), event("g2")])
    assert stored(tailer) == ["g1", "g2"]
    (line,) = tailer.rejected_path.read_text().splitlines()
    assert json.loads(line)["reason"] == "store_refused" and json.loads(line)["record"]["auditID"] == "bad"
    assert tailer.metric("tailer_records_rejected_total", reason="store_refused") == 1
