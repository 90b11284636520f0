"""kubectl audit: one parser with kubectl's conventions, one-line errors, and only the imports it needs."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kubectl_audit import cli

ROOT = Path(__file__).resolve().parents[2]
NEVER = ("tailer", "aiohttp", "psycopg", "watchdog", "prometheus_client", "forwarder", "fluent_forward")
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: shop}},
           {name: other, context: {cluster: c, user: u}}]
current-context: c
"""


def modules_after(*argv: str, env: dict[str, str] | None = None) -> tuple[int, set[str], str]:
    """Run the plugin in a fresh interpreter; the top-level modules it loaded, its exit status, stderr."""
    code = ("import sys, json\nfrom kubectl_audit.cli import main\n"
            f"try:\n    rc = main({list(argv)!r})\nexcept SystemExit as e:\n    rc = e.code\n"
            "sys.stdout.flush()\nprint('\\n' + json.dumps([rc, sorted({m.split('.')[0] for m in sys.modules})]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=env)
    rc, mods = json.loads(proc.stdout.strip().splitlines()[-1])
    return rc, set(mods), proc.stderr


def test_help_lists_every_command_and_imports_no_client_library() -> None:
    rc, mods, _ = modules_after("--help")
    assert rc == 0
    assert not mods & {"httpx", "yaml", "kubernetes", "orjson", "kube_audit", *NEVER}, mods
    out = subprocess.run([sys.executable, "-m", "kubectl_audit.cli", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60).stdout
    for command in cli.COMMANDS:
        assert f"    {command} " in out, command


@pytest.mark.parametrize("argv", [
    ("databases", "orders", "-n", "shop"),  # the ConfigMap view: the kubeconfig, the Kubernetes client
    ("history", "-n", "shop", "--server", "http://127.0.0.1:9"),  # the API: httpx
    ("history", "deployments", "web", "--server", "http://127.0.0.1:9"),  # namespace from the kubeconfig
])
def test_commands_never_import_the_tailer_or_its_libraries(tmp_path: Path, argv: tuple[str, ...]) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(KUBECONFIG)
    rc, mods, err = modules_after(*argv, "--kubeconfig", str(kubeconfig))
    assert rc == 1 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert not mods & set(NEVER), mods & set(NEVER)


@pytest.mark.parametrize("content", ["garbage: [", "- a\n", "contexts: 5\n", "current-context: nope\ncontexts: []\n"])
@pytest.mark.parametrize("argv", [("databases", "orders"),
                                  ("history", "deployments", "web", "--server", "http://127.0.0.1:9")])
def test_a_broken_kubeconfig_is_one_line_and_exit_1(tmp_path: Path, content: str, argv: tuple[str, ...]) -> None:
    """Regression: a kubeconfig that is not YAML (or not a kubeconfig) ended in a traceback."""
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(content)
    rc, _, err = modules_after(*argv, "--kubeconfig", str(kubeconfig))
    assert rc == 1 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: ")


def test_usage_errors_exit_1_like_kubectl(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["databases", "a", "b"], ["history", "--limit", "x"], [], ["diff", "deployments"],
                 ["history", "-n", "a", "-A"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.splitlines()) == 1, err


def test_flags_go_before_or_after_the_command() -> None:
    parser = cli.build_parser()

    def parse(*argv: str) -> argparse.Namespace:
        return parser.parse_args(cli.normalize(parser, list(argv)))

    a = parse("-n", "shop", "history", "deployments", "web", "-o", "json")
    assert (a.command, a.namespace, a.resource, a.name, a.output) == ("history", "shop", "deployments", "web", "json")
    a = parse("-n", "shop", "databases", "orders")
    assert (a.command, a.namespace, a.resource, a.name) == ("show", "shop", "databases", "orders")
    a = parse("--context=x", "diff", "deployments", "web", "--from", "2")
    assert (a.command, a.context, a.start) == ("diff", "x", 2)
    a = parse("show", "history", "h1")  # a resource called like a command is reachable through show
    assert (a.command, a.resource, a.name) == ("show", "history", "h1")


def test_namespace_comes_from_the_kubeconfig_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(KUBECONFIG)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    def ns(*argv: str) -> str:
        parser = cli.build_parser()
        return cli.namespace(parser.parse_args(["history", *argv, "--kubeconfig", str(kubeconfig)]))

    assert ns() == "shop" and ns("-n", "x") == "x" and ns("--context", "other") == "default"
    with pytest.raises(cli.CommandError, match="nope"):
        ns("--context", "nope")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert cli.namespace(cli.build_parser().parse_args(["history"])) == "default"  # no kubeconfig at all


def _event(stage: str, user: str, name: str) -> dict:
    return {"stageTimestamp": "2026-11-20T09:00:01.123456Z", "stage": stage, "verb": "patch",
            "user": {"username": user}, "objectRef": {"resource": "deployments", "apiGroup": "apps",
                                                     "namespace": "shop", "name": name},
            "responseStatus": {"code": 200} if stage == "ResponseComplete" else {}}


def test_watch_prints_an_aligned_table_with_the_stage(capsys: pytest.CaptureFixture[str]) -> None:
    """Regression (issue 14): each watch row was aligned on its own (the columns wandered), and
    RequestReceived and ResponseComplete rows of one request looked the same (no STAGE column)."""
    from kubectl_audit import api

    class Client:
        def stream(self, path: str, params: dict) -> list[dict]:
            return [{"type": "ADDED", "object": _event("RequestReceived", "a", "web")},
                    {"type": "BOOKMARK", "object": {}},
                    {"type": "ADDED", "object": _event("ResponseComplete", "system:serviceaccount:kube-system:x", "w")}]

    args = cli.build_parser().parse_args(["watch", "-n", "shop"])
    api.watch(Client(), args)  # type: ignore[arg-type]
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["TIME", "STAGE", "USER", "VERB", "RESOURCE", "NAMESPACE", "NAME", "CODE"]
    starts = [header.index(word) for word in header.split()]
    assert [r.split()[1] for r in rows] == ["RequestReceived", "ResponseComplete"]
    for row in rows:
        for start in starts[:3]:  # TIME, STAGE, USER start where their headings do
            assert row[start - 1:start] in ("", " ") and row[start] != " ", (row, start)
    assert rows[0].index("patch") == header.index("VERB")


def test_common_short_names_and_kinds_resolve_like_kubectl() -> None:
    from kube_audit.model.groups import common_resource

    for spelling in ("deploy", "Deployment", "deployment", "deployments", "deployments.apps", "deploy.apps"):
        assert common_resource(spelling) == ("deployments", "apps"), spelling
    assert common_resource("po") == ("pods", "") and common_resource("svc") == ("services", "")
    assert common_resource("crd") == ("customresourcedefinitions", "apiextensions.k8s.io")
    assert common_resource("deploy.batch") is None and common_resource("databases") is None


def test_resolution_standalone_uses_the_table_and_keeps_unknown_names() -> None:
    from kubectl_audit import api

    args = cli.build_parser().parse_args(["history", "--server", "http://127.0.0.1:9"])
    client = api.Client(args)
    assert client.kube is None
    assert api.resolve(client, "deploy") == ("deployments.apps", True)
    assert api.resolve(client, "no") == ("nodes", False)
    assert api.resolve(client, "databases.example.com") == ("databases.example.com", None)


def test_resolution_through_discovery_with_a_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubectl_audit import api
    from tests.helpers.fakekube import FakeKube

    monkeypatch.delenv("KUBECTL_AUDIT_SERVER", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeKube() as fake:
        fake.add_resource("example.com", "v1", "databases", "Database")
        fake.add_resource("example.com", "v1", "clusterthings", "ClusterThing", namespaced=False)
        kubeconfig = fake.write_kubeconfig(tmp_path / "config")
        client = api.Client(cli.build_parser().parse_args(["history", "--kubeconfig", str(kubeconfig)]))
        assert client.kube is not None and client.server == f"http://127.0.0.1:{fake.port}"
        assert api.resolve(client, "Database") == ("databases.example.com", True)
        assert api.resolve(client, "clusterthing") == ("clusterthings.example.com", False)
        assert api.resolve(client, "deploy") == ("deployments.apps", True)  # not served here: the table
        assert api.resolve(client, "widgets") == ("widgets", None)  # the store may know a dropped type


def test_no_kubeconfig_and_no_server_is_one_line(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBECTL_AUDIT_SERVER",
                                                            "KUBERNETES_SERVICE_HOST")}
    env["HOME"] = str(tmp_path)
    for argv in (("history", "-n", "shop"), ("web",), ("diff", "deploy", "web")):
        rc, _, err = modules_after(*argv, env=env)
        assert rc == 1 and err == "error: no cluster configured: give --server or a kubeconfig\n", err
    rc, _, err = modules_after("history", "--kubeconfig", str(tmp_path / "missing"), env=env)
    assert rc == 1 and err.startswith("error: cannot read the kubeconfig: ") and len(err.splitlines()) == 1, err


def test_one_name_is_the_short_form() -> None:
    parser = cli.build_parser()
    a = parser.parse_args(cli.normalize(parser, ["-n", "shop", "web", "-o", "json"]))
    assert (a.command, a.by_name, a.resource, a.name, a.namespace) == ("history", True, "web", None, "shop")
    a = parser.parse_args(cli.normalize(parser, ["deploy", "web"]))
    assert (a.command, a.resource, a.name) == ("show", "deploy", "web")
    a = parser.parse_args(cli.normalize(parser, ["history", "deploy"]))
    assert (a.command, a.by_name, a.resource) == ("history", False, "deploy")
