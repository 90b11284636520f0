"""A real tailer process with its store: resends stored once, the API behind tokens, watch resume, kubectl audit."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from kubectl_audit import api as kubectl_api
from tailer.api.routes import PREFIX
from tests.conftest import DATA, wait_for
from tests.helpers.sender import Sender

SCENARIO = [orjson.loads(line) for line in (DATA / "scenario-deployment.log").read_bytes().splitlines()]


@pytest.fixture
def tailer(start_tailer, store_target: str, tmp_path) -> Any:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("- {token: admin-token, user: admin, namespaces: ['*']}\n"
                      "- {token: shop-token, user: shopper, namespaces: [shop]}\n")
    store = ["--store", store_target] if store_target.startswith("postgresql") else []
    return start_tailer("--token-file", str(tokens), "--stdout", "false", "--watch-poll", "50ms", *store)


def api(tailer: Any, path: str, token: str = "admin-token", **params: Any) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{tailer.http_port}{PREFIX}{path}", params=params, timeout=10,
                     headers={"Authorization": f"Bearer {token}"})


def test_a_resent_chunk_is_stored_once(tailer) -> None:
    with Sender("127.0.0.1", tailer.port) as sender:
        sender.send_chunk(SCENARIO)
        sender.send_chunk(SCENARIO)  # the forwarder did not see the ack and sends the chunk again
    items = api(tailer, "/events", limit=1000).json()["items"]
    assert [(e["auditID"], e["stage"]) for e in items] == [(e["auditID"], e["stage"]) for e in SCENARIO]
    assert tailer.metric("tailer_store_events_inserted_total") == len(SCENARIO)
    assert tailer.metric("tailer_store_duplicates_total") == len(SCENARIO)


def test_watch_resume_and_namespace_tokens(tailer) -> None:
    base = f"http://127.0.0.1:{tailer.http_port}{PREFIX}"
    shop = {"Authorization": "Bearer shop-token"}
    assert api(tailer, "/namespaces/kube-system/events", token="shop-token").status_code == 403
    assert api(tailer, "/events", token="shop-token").status_code == 403
    assert api(tailer, "/events", token="nope").status_code == 401
    seen: list[dict[str, Any]] = []
    with Sender("127.0.0.1", tailer.port) as sender:
        sender.send_chunk(SCENARIO[:4])
        with httpx.stream("GET", base + "/namespaces/shop/events", headers=shop, timeout=20,
                          params={"watch": "true", "resourceVersion": "0"}) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            seen += [orjson.loads(next(lines)) for _ in range(4)]
            sender.send_chunk(SCENARIO[4:7])
            seen += [orjson.loads(next(lines)) for _ in range(3)]
        # disconnected; the tailer keeps storing
        sender.send_chunk(SCENARIO[7:])
        sender.send_chunk([{**SCENARIO[0], "auditID": "other-ns", "objectRef": {"resource": "pods", "namespace": "x"}}])
        rv = seen[-1]["object"]["metadata"]["resourceVersion"]
        with httpx.stream("GET", base + "/namespaces/shop/events", headers=shop, timeout=20,
                          params={"watch": "true", "resourceVersion": rv}) as resp:
            lines = resp.iter_lines()
            seen += [orjson.loads(next(lines)) for _ in range(len(SCENARIO) - 7)]
    assert [(e["object"]["auditID"], e["object"]["stage"]) for e in seen] == [
        (e["auditID"], e["stage"]) for e in SCENARIO]
    wait_for(lambda: tailer.metric("tailer_api_watchers") == 0, what="watchers gone")


def test_kubectl_audit_over_the_api(tailer, capsys, monkeypatch) -> None:
    with Sender("127.0.0.1", tailer.port) as sender:
        sender.send_chunk(SCENARIO)
    monkeypatch.setenv("KUBECTL_AUDIT_SERVER", f"http://127.0.0.1:{tailer.http_port}")
    monkeypatch.setenv("KUBECTL_AUDIT_TOKEN", "shop-token")

    def run(*argv: str) -> tuple[int, str, str]:
        code = kubectl_api.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("history", "deployments.apps", "web", "-n", "shop")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["VERSION", "TIME", "USER", "VERB", "PATCH", "CHANGE"]
    assert len(lines) == 11 and "unknown: " in lines[4] and "scale" in lines[7]
    assert lines[1].split()[-1] == "created" and "spec." in lines[2] and "->" in lines[2]
    code, out, _ = run("history", "deployments.apps", "web", "-n", "shop", "-o", "json", "--user", "bob@example.com")
    assert [v["version"] for v in orjson.loads(out)["items"]] == [5, 9]
    code, out, _ = run("diff", "deployments", "web", "-n", "shop", "--from", "2", "--to", "3", "--field", "spec")
    assert code == 0 and "spec.template.spec.containers[0].image" in out and '"web:1.1"' in out
    code, out, _ = run("bisect", "deployments", "web", "-n", "shop", "--field", "spec.replicas", "--value", "5")
    assert code == 0 and out.startswith("version 8 ") and "uncertain: versions 4, 6, 7" in out
    code, out, _ = run("history", "-n", "shop", "--verb", "update", "-o", "yaml")
    assert code == 0 and "verb: update" in out
    code, _, err = run("history", "-A")
    assert code == 1 and err.startswith("error: forbidden (403): ") and len(err.splitlines()) == 1
    code, _, err = run("history", "deployments", "nope", "-n", "shop")
    assert code == 1 and err.startswith("error: not found (404): ")
    code, _, err = run("history", "-n", "shop", "--token", "bad")
    assert code == 1 and err.startswith("error: unauthorized (401): ")
    code, _, err = run("history", "-n", "shop", "--server", "http://127.0.0.1:9")
    assert code == 1 and err.startswith("error: cannot reach the audit API at http://127.0.0.1:9")


def test_a_failed_store_commit_writes_nothing_to_stdout(start_tailer, postgres) -> None:
    """The store commits before stdout is written: a chunk the store refused (no ack, the forwarder
    resends) leaves no line on stdout, so the resend does not print it twice."""
    import psycopg

    url = postgres.new_database()
    tailer = start_tailer("--store", url)
    wait_for(lambda: tailer.metric("tailer_store_healthy") == 1, what="store healthy")
    with psycopg.connect(url, autocommit=True) as conn:  # the database refuses the next inserts
        conn.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse()")
    for _ in range(2):  # two attempts of the forwarder, neither acked
        with Sender("127.0.0.1", tailer.port) as sender, pytest.raises(ConnectionError):
            sender.send_chunk(SCENARIO[:3])
    assert tailer.metric("tailer_sink_errors_total", sink="store") == 2
    assert tailer.records() == []
    ready = f"http://127.0.0.1:{tailer.http_port}/readyz"
    assert httpx.get(ready).status_code == 503  # every chunk would be refused: not ready
    wait_for(lambda: tailer.metric("tailer_store_healthy") == 0, what="store unhealthy")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER refuse ON audit_events")
    wait_for(lambda: httpx.get(ready).status_code == 200, what="ready again after a test write")
    with Sender("127.0.0.1", tailer.port) as sender:
        sender.send_chunk(SCENARIO[:3])
    assert tailer.records() == SCENARIO[:3]
    assert tailer.proc.poll() is None
    refused = [e for e in tailer.logs() if e["event"] == "chunk_not_acked"]
    assert len(refused) == 2 and "disk full" in refused[0]["error"]
    assert "Unhandled exception" not in tailer.stderr()
