"""The sources stage in a real tailer (issue 12): status records sent as a forwarder sends them show up in
/sources once, survive a restart, turn silent when the source stops; a stock peer appears from its events."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kube_audit.model.source import OPTION, STATUS_TAG, GapReport, SourceId, Status
from kubectl_audit.cli import main as kubectl
from tailer.api.routes import PREFIX
from tests.conftest import wait_for
from tests.helpers.sender import Sender

IDENTITY = {OPTION: {"source": "apiserver-0", "cluster": "prod"}}
GAP = GapReport("ino-42:0-4096", "/var/log/audit/audit-2026-11-20.log", 42, 4096, "rotated_unread",
                start="2026-11-20T09:00:00Z", end="2026-11-20T09:05:00Z")


def status(gaps: tuple[GapReport, ...] = (GAP,), lag: int = 512, bad: int = 2) -> dict[str, Any]:
    return Status(SourceId("prod", "apiserver-0"), "0.12.0", "2026-11-20T08:00:00Z", "2026-11-20T09:10:00Z",
                  "/var/log/audit/audit.log", 43, 8192, lag, 3, 10, 10, 9, {"not_json": bad}, gaps).to_record()


def event(n: int, stamp: str) -> dict[str, Any]:
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": f"id-{n}",
            "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/shop/pods", "verb": "create",
            "user": {"username": "alice"}, "objectRef": {"resource": "pods", "namespace": "shop", "name": f"p{n}"},
            "responseStatus": {"code": 201}, "stageTimestamp": stamp, "requestReceivedTimestamp": stamp}


@pytest.fixture
def tokens(tmp_path) -> str:
    path = tmp_path / "tokens.yaml"
    path.write_text("- {token: admin-token, user: admin, namespaces: ['*']}\n"
                    "- {token: shop-token, user: shopper, namespaces: [shop]}\n")
    return str(path)


def tailer_args(store_target: str, tmp_path, tokens: str, *extra: str) -> list[str]:
    store = ["--store", store_target] if store_target.startswith("postgresql") else [
        "--data-dir", str(tmp_path / "kept")]
    return ["--token-file", tokens, "--stdout", "false", "--source-check-interval", "100ms", *store, *extra]


def get(tailer: Any, path: str, token: str = "admin-token", **params: Any) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{tailer.http_port}{PREFIX}{path}", params=params, timeout=10,
                     headers={"Authorization": f"Bearer {token}"})


def test_a_reported_gap_shows_up_once_and_survives_a_restart(start_tailer, store_target, tmp_path, tokens, capsys,
                                                             monkeypatch) -> None:
    tailer = start_tailer(*tailer_args(store_target, tmp_path, tokens))
    with Sender("127.0.0.1", tailer.port) as sender:
        sender.send_chunk([event(1, "2026-11-20T09:02:00Z")], options=IDENTITY)
        sender.send_chunk([status()], tag=STATUS_TAG, options=IDENTITY)
        sender.send_chunk([status()], tag=STATUS_TAG, options=IDENTITY)  # not acked in time: resent
        sender.send_chunk([status(gaps=(), bad=5)], tag=STATUS_TAG, options=IDENTITY)  # the next one
    body = get(tailer, "/sources").json()
    assert body["kind"] == "SourceList"
    (item,) = body["items"]
    assert (item["name"], item["cluster"], item["state"], item["lagBytes"]) == ("apiserver-0", "prod", "gap", 512)
    assert item["lastEventTime"] == "2026-11-20T09:02:00.000Z" and item["badLines"] == {"not_json": 5}
    assert [(g["id"], g["bytes"], g["from"], g["to"], g["reason"], g["inode"]) for g in item["gaps"]] == [
        (GAP.id, 4096, "2026-11-20T09:00:00Z", "2026-11-20T09:05:00Z", "rotated_unread", 42)]
    assert tailer.metric("tailer_source_gap_bytes_total", source="prod/apiserver-0") == 4096
    assert tailer.metric("tailer_source_bad_lines_total", kind="not_json", source="prod/apiserver-0") == 5
    assert tailer.metric("tailer_source_lag_bytes", source="prod/apiserver-0") == 512
    assert [e["id"] for e in tailer.logs() if e.get("event") == "source_gap"] == [GAP.id]
    # one source by name, by name and cluster; unknown: a Kubernetes Status
    assert get(tailer, "/sources/apiserver-0").json()["gapBytes"] == 4096
    assert get(tailer, "/sources/apiserver-0", cluster="prod").json()["cluster"] == "prod"
    missing = get(tailer, "/sources/apiserver-0", cluster="staging")
    assert missing.status_code == 404 and missing.json()["kind"] == "Status" and missing.json()["reason"] == "NotFound"
    # a namespace's token may read its events, not the sources (cluster-scoped)
    assert get(tailer, "/sources", token="shop-token").status_code == 403
    assert get(tailer, "/sources", labelSelector="x=y").status_code == 400  # never silently ignored
    # the events list says the range shown crosses the gap; a range away from it says nothing
    wait_for(lambda: get(tailer, "/auditevents").headers.get_list("Warning"), what="the stage's view refreshed")
    (warning,) = get(tailer, "/auditevents").headers.get_list("Warning")
    assert warning.startswith('299 - "the range shown crosses a known gap of source prod/apiserver-0: 4096 bytes')
    assert get(tailer, "/auditevents", since="2026-11-20T10:00:00Z").headers.get_list("Warning") == []
    assert get(tailer, "/namespaces/shop/pods/p1/versions").headers.get_list("Warning") == [warning]  # a history
    # kubectl audit sources prints the table; kubectl audit history says its range crosses the gap
    monkeypatch.setenv("KUBECTL_AUDIT_SERVER", f"http://127.0.0.1:{tailer.http_port}")
    monkeypatch.setenv("KUBECTL_AUDIT_TOKEN", "admin-token")
    capsys.readouterr()
    assert kubectl(["sources"]) == 0
    out, _ = capsys.readouterr()
    header, line = out.splitlines()
    assert header.split() == ["NAME", "CLUSTER", "STATE", "LAST", "SEEN", "LAG", "GAP", "BYTES"]
    assert line.split()[:3] == ["apiserver-0", "prod", "gap"] and line.split()[-2:] == ["512", "4096"]
    assert kubectl(["sources", "apiserver-0", "-o", "wide"]) == 0
    assert "not_json=5" in capsys.readouterr().out
    assert kubectl(["sources", "nope"]) == 1
    assert 'not found (404): sources "nope" not found' in capsys.readouterr().err
    assert kubectl(["history", "-A"]) == 0
    out, err = capsys.readouterr()
    assert "p1" in out and err.startswith("Warning: the range shown crosses a known gap of source prod/apiserver-0")
    monkeypatch.setenv("KUBECTL_AUDIT_TOKEN", "shop-token")
    assert kubectl(["sources"]) == 1
    assert 'forbidden (403): sources.audit.kube-audit-forwarder.io is forbidden: User "shopper"' in \
        capsys.readouterr().err

    assert tailer.stop() == 0
    again = start_tailer(*tailer_args(store_target, tmp_path, tokens))
    (kept,) = get(again, "/sources").json()["items"]
    assert kept["gaps"] == item["gaps"] and kept["lastEventTime"] == item["lastEventTime"]
    with Sender("127.0.0.1", again.port) as sender:  # the forwarder restarted too and resends the gap
        sender.send_chunk([status()], tag=STATUS_TAG, options=IDENTITY)
    assert len(get(again, "/sources").json()["items"][0]["gaps"]) == 1
    assert again.metric("tailer_source_gap_bytes_total", source="prod/apiserver-0") == 0
    # 5 before the restart, 2 now: the forwarder restarted and counts from zero again
    assert again.metric("tailer_source_bad_lines_total", kind="not_json", source="prod/apiserver-0") == 2
    assert not [e for e in again.logs() if e.get("event") == "source_gap"]


def test_a_stock_peer_appears_and_turns_silent_when_it_stops(start_tailer, tmp_path, tokens) -> None:
    tailer = start_tailer(*tailer_args("sqlite", tmp_path, tokens, "--shared-key", "k", "--source-silent-after", "1s"))
    with Sender("127.0.0.1", tailer.port, shared_key="k", hostname="fluent-bit-0") as sender:
        sender.send_chunk([event(1, "2026-11-20T09:02:00Z"), event(2, "2026-11-20T09:01:00Z")])
        sender.send_chunk([{"kind": "ForwarderStatus"}], tag=STATUS_TAG)  # no source: refused, acked
    (item,) = get(tailer, "/sources").json()["items"]
    assert (item["name"], item["cluster"], item["lagBytes"], item["gaps"]) == ("fluent-bit-0", "", None, [])
    assert item["lastEventTime"] == "2026-11-20T09:02:00.000Z" and item["state"] in ("ok", "silent")
    assert tailer.metric("tailer_records_rejected_total", reason="bad_status") == 1
    wait_for(lambda: get(tailer, "/sources/fluent-bit-0").json()["state"] == "silent", what="silent")
    wait_for(lambda: [e for e in tailer.logs() if e.get("event") == "source_silent"], what="source_silent logged")
    (line,) = [e for e in tailer.logs() if e.get("event") == "source_silent"]
    assert line["source"] == "fluent-bit-0" and line["level"] == "warning"
