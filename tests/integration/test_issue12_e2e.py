"""Issue 12 end to end: real forwarders and a real tailer, the two halves of the contract together. A
backup rotated away unread is in ``sources`` with its bytes and time range, once, also after a forwarder
restart; a stopped forwarder turns silent; the chain the forwarder sealed verifies on the stored events,
and an edited row does not; two clusters keep two histories of the same object."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from kube_audit.contract import PREFIX
from kubectl_audit.cli import main as kubectl_audit
from tests.conftest import DATA, TailerProcess, wait_for
from tests.helpers.auditlog import event
from tests.integration.test_forwarder_sources import lose_a_backup_unread

KEY = "e2e shared key"
SCENARIO = [orjson.loads(line) for line in (DATA / "scenario-deployment.log").read_bytes().splitlines()]


def ev(i: int) -> dict[str, Any]:
    return {**event(i), "stageTimestamp": f"2026-11-20T09:{i // 60:02d}:{i % 60:02d}.000000Z"}


def append(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("ab") as fh:
        fh.write(b"".join(orjson.dumps(r) + b"\n" for r in records))


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.yaml"
    path.write_text("- {token: admin-token, user: admin, namespaces: ['*']}\n")
    return path


def api(tailer: Any, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{tailer.http_port}{PREFIX}{path}", params=params, timeout=10,
                     headers={"Authorization": "Bearer admin-token"})


def source(tailer: Any, name: str) -> dict[str, Any]:
    resp = api(tailer, f"/sources/{name}")
    return resp.json() if resp.status_code == 200 else {}


def verify(tailer: Any, capsys: Any) -> tuple[int, str]:
    code = kubectl_audit(["verify", "--server", f"http://127.0.0.1:{tailer.http_port}", "--token", "admin-token"])
    return code, capsys.readouterr().out


def test_a_lost_backup_is_one_gap_in_sources_a_stopped_forwarder_goes_silent_and_the_chain_verifies(
        start_forwarder, tokens, tmp_path: Path, capsys) -> None:
    tailer = TailerProcess(tmp_path, "--shared-key", KEY, "--token-file", str(tokens), "--stdout", "false",
                           "--source-silent-after", "3s", "--source-check-interval", "200ms")
    log = tmp_path / "audit.log"
    log.touch()
    args = ("--source-name", "apiserver-0", "--cluster", "prod", "--shared-key", KEY, "--max-held-files", "2",
            "--max-inflight-chunks", "1", "--chunk-events", "1", "--flush-interval", "10ms", "--backoff-max",
            "200ms", "--status-interval", "1s")
    fwd = start_forwarder(tailer.port, log, *args)  # the tailer is not up yet: nothing is acked
    append(log, [ev(0), ev(1), ev(2)])
    wait_for(lambda: fwd.metric("forwarder_events_read_total") >= 1, what="reader blocked on the window")

    lost, size = lose_a_backup_unread(fwd, log, lambda i: append(log, [ev(3 + i)]))
    tailer.start()
    try:
        wait_for(lambda: source(tailer, "apiserver-0").get("gaps"), timeout=15, what="the gap in sources")
        item = source(tailer, "apiserver-0")
        assert (item["cluster"], item["state"]) == ("prod", "gap")
        (gap,) = item["gaps"]
        assert (gap["file"], gap["bytes"], gap["reason"]) == (str(lost), size, "rotated_unread")
        assert (gap["from"], gap["to"]) == (ev(2)["stageTimestamp"], ev(4)["stageTimestamp"])  # read before, after
        wait_for(lambda: len(api(tailer, "/events").json()["items"]) == 5, what="the events not lost")
        assert fwd.stop() == 0
        seen = source(tailer, "apiserver-0")["lastSeen"]
        fwd = start_forwarder(tailer.port, log, *args)
        wait_for(lambda: source(tailer, "apiserver-0")["lastSeen"] != seen, what="a status after the restart")
        assert len(source(tailer, "apiserver-0")["gaps"]) == 1
        assert sum(e["event"] == "source_gap" for e in tailer.logs()) == 1
        code, out = verify(tailer, capsys)
        assert code == 0, out  # the forwarder's chain, across its restart, holds on what was stored
        assert fwd.stop() == 0
        wait_for(lambda: source(tailer, "apiserver-0")["state"] == "silent", timeout=15, what="silent")
        wait_for(lambda: any(e["event"] == "source_silent" for e in tailer.logs()), what="the source_silent line")
    finally:
        tailer.stop()
    db = next((tmp_path / f"data-{tailer.port}").glob("*.db"))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit_events SET username = 'mallory' WHERE seq = (SELECT MIN(seq) FROM audit_events)")
    tailer.start()
    try:
        code, out = verify(tailer, capsys)
        assert code == 1 and "altered" in out, out
    finally:
        tailer.stop()


def test_two_clusters_keep_two_histories_of_the_same_object(start_tailer, start_forwarder, tokens,
                                                             tmp_path: Path) -> None:
    tailer = start_tailer("--token-file", str(tokens), "--stdout", "false")
    for cluster in ("blue", "green"):
        log = tmp_path / f"{cluster}.log"
        log.touch()
        start_forwarder(tailer.port, log, "--cluster", cluster, "--source-name", "apiserver-0",
                        "--position-file", str(tmp_path / f"{cluster}.pos"), "--read-from-head", "true", "--flush-interval", "10ms")
        events = [{**e, "auditID": f"{cluster}-{e['auditID']}"} for e in SCENARIO]
        append(log, events if cluster == "blue" else events[:4])  # green only saw the first few
    wait_for(lambda: len(api(tailer, "/events").json()["items"]) == len(SCENARIO) + 4, what="both clusters")
    path = "/namespaces/shop/deployments.apps/web/versions"
    assert api(tailer, path).status_code == 409  # one object in two clusters: which one?
    blue, green = (api(tailer, path, cluster=c).json()["items"] for c in ("blue", "green"))
    assert 1 <= len(green) < len(blue)  # green only saw the first changes
    assert {i["auditID"].split("-")[0] for i in blue} == {"blue"} and {i["auditID"].split("-")[0] for i in green} == {"green"}
