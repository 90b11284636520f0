"""kubectl audit <resource> <name>: a recorded scenario through the writer, then the plugin's exact output."""

from __future__ import annotations

from typing import Any

import pytest

from kubectl_audit import cli as kubectl_audit
from tests.helpers.fakekube import FakeKube
from tests.integration.test_configmaps import database, eventually, fake, start_writer  # noqa: F401

TABLE = """\
TIME                   USER                VERB           CHANGE
2026-11-20T09:00:01Z   alice@example.com   create         created
2026-11-20T09:00:02Z   bob@example.com     patch          spec.replicas: 1 -> 3
2026-11-20T09:00:03Z   system:admin        patch/status   status.ready: true
2026-11-20T09:00:04Z   mallory             patch          failed (403)
"""


def event(i: int, verb: str, user: str, code: int = 200, sub: str = "", **kw: Any) -> dict[str, Any]:
    ref = {"resource": "databases", "apiGroup": "example.com", "apiVersion": "v1", "namespace": "shop",
           "name": "orders", **({"subresource": sub} if sub else {})}
    return {"auditID": f"0000000{i}-aaaa", "stage": "ResponseComplete", "verb": verb,
            "user": {"username": user, "groups": ["system:authenticated"]}, "objectRef": ref,
            "responseStatus": {"code": code}, "stageTimestamp": f"2026-11-20T09:00:0{i}.123456Z", **kw}


@pytest.fixture
async def recorded(fake: FakeKube) -> FakeKube:  # noqa: F811
    uid = fake.create("example.com", "v1", "databases", "shop", "orders")["metadata"]["uid"]
    fake.create("example.com", "v1", "databases", "shop", "untracked")
    fake.create("example.com", "v1", "databases", "shop", "lost", {"metadata": {"annotations": {
        "audit.kube-audit-forwarder.io/configmap": "audit-databases-lost"}}})
    w = await start_writer(fake)
    try:
        w.writer.offer([
            event(1, "create", "alice@example.com", 201, requestObject=database(),
                  responseObject=database(uid=uid)),
            event(3, "patch", "system:admin", sub="status", requestObject={"status": {"ready": True}}),
            event(2, "patch", "bob@example.com", requestObject={"spec": {"replicas": 3}}),
            event(4, "patch", "mallory", 403, requestObject={"spec": {"replicas": 0}}),
        ])
        await eventually(lambda: (o := fake.get("example.com", "databases", "shop", "orders"))
                         and o["metadata"].get("annotations"), what="annotation")
    finally:
        await w.stop()
    return fake


def run(api: FakeKube, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = kubectl_audit.main([*args, "--kubeconfig", str(api.kubeconfig)])  # type: ignore[attr-defined]
    out, err = capsys.readouterr()
    return code, out, err


def test_table(recorded: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(recorded, capsys, "databases.example.com", "orders", "-n", "shop") == (0, TABLE, "")
    # the context's namespace is "default": -n matters, and a kind or singular works like kubectl
    assert run(recorded, capsys, "database", "orders", "--namespace=shop", "--context", "fake") == (0, TABLE, "")


def test_filters(recorded: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(recorded, capsys, "databases", "orders", "-n", "shop", "--verb", "patch", "--user", "mallory")
    assert (code, out) == (0, "TIME                   USER      VERB    CHANGE\n"
                                 "2026-11-20T09:00:04Z   mallory   patch   failed (403)\n")
    code, out, err = run(recorded, capsys, "databases", "orders", "-n", "shop", "--since", "1h")
    assert (code, out, err) == (0, "", 'No audit entries found for databases.example.com "orders".\n')


def test_json(recorded: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(recorded, capsys, "databases", "orders", "-n", "shop", "-o", "json", "--user", "bob@example.com")
    assert code == 0
    assert out == """\
[
    {
        "time": "2026-11-20T09:00:02.123456Z",
        "user": "bob@example.com",
        "groups": [
            "system:authenticated"
        ],
        "verb": "patch",
        "subresource": "",
        "auditID": "00000002-aaaa",
        "code": 200,
        "change": "spec.replicas: 1 -> 3"
    }
]
"""
    code, out, _ = run(recorded, capsys, "databases", "orders", "-n", "shop", "-o", "yaml", "--user", "mallory")
    assert code == 0 and out.startswith("- time: '2026-11-20T09:00:04.123456Z'\n  user: mallory\n")


def test_clear_errors(recorded: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(recorded, capsys, "databases", "nope", "-n", "shop") == (
        1, "", 'Error from server (NotFound): databases.example.com "nope" not found in namespace shop\n')
    code, _, err = run(recorded, capsys, "databases", "untracked", "-n", "shop")
    assert code == 1 and err.startswith('error: databases.example.com "untracked" is not tracked')
    assert run(recorded, capsys, "databases", "lost", "-n", "shop") == (
        1, "", 'error: the audit ConfigMap "audit-databases-lost" of databases.example.com "lost" is missing '
               "in namespace shop\n")
    assert run(recorded, capsys, "widgets", "x") == (1, "", 'error: the server doesn\'t have a resource type "widgets"\n')
    recorded.unavailable = True
    code, _, err = run(recorded, capsys, "databases", "orders", "-n", "shop")
    assert code == 1 and "503" in err


def test_no_cluster(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert kubectl_audit.main(["databases", "orders", "--kubeconfig", str(tmp_path / "none")]) == 1
    assert capsys.readouterr().err.startswith("error: no cluster to talk to")
