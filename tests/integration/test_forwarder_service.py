"""--tailer-service: the tailer's address from its Service (fake API), looked up again on each reconnect."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from forwarder.app import ServiceResolver
from forwarder.errors import ConfigError, TransportError
from tests.conftest import wait_for
from tests.helpers.auditlog import event
from tests.helpers.fakekube import FakeKube
from tests.integration.test_forwarder import append

NS, NAME = "kube-audit", "kube-audit-tailer"


def service(ports: list[dict], cluster_ip: str = "127.0.0.1") -> dict:
    return {"spec": {"clusterIP": cluster_ip, "ports": ports}}


@pytest.fixture
def kube(tmp_path: Path):
    with FakeKube() as fake:
        fake.kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        yield fake


def lookup(kube: FakeKube) -> tuple[str, int]:
    async def go() -> tuple[str, int]:
        resolver = ServiceResolver((NS, NAME), str(kube.kubeconfig))
        try:
            return await resolver()
        finally:
            await resolver.close()

    return asyncio.run(go())


def test_the_port_named_forward_else_the_only_port(kube: FakeKube) -> None:
    kube.create("", "v1", "services", NS, NAME, service([{"name": "http", "port": 8080},
                                                         {"name": "forward", "port": 24224}]))
    assert lookup(kube) == ("127.0.0.1", 24224)
    kube.delete("", "services", NS, NAME)
    kube.create("", "v1", "services", NS, NAME, service([{"port": 3000}], "10.96.0.7"))
    assert lookup(kube) == ("10.96.0.7", 3000)


@pytest.mark.parametrize("body, says", [
    (None, "404"),
    (service([{"name": "a", "port": 1}, {"name": "b", "port": 2}]), "2 ports and none is named 'forward'"),
    (service([{"name": "forward", "port": 1}], "None"), "no cluster IP"),
])
def test_lookup_failures_are_transport_errors(kube: FakeKube, body: dict | None, says: str) -> None:
    if body is not None:
        kube.create("", "v1", "services", NS, NAME, body)
    with pytest.raises(TransportError) as err:
        lookup(kube)
    assert err.value.step == "tailer_service" and says in str(err.value)


def test_an_unavailable_api_is_a_transport_error(kube: FakeKube) -> None:
    kube.unavailable = True
    with pytest.raises(TransportError, match="tailer_service: GET Service kube-audit/kube-audit-tailer: 503"):
        lookup(kube)


def test_no_kubeconfig_outside_a_cluster_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="needs --kubeconfig"):
        asyncio.run(ServiceResolver((NS, NAME), None).open())


def test_the_forwarder_follows_the_service(kube: FakeKube, start_tailer, start_forwarder, tmp_path: Path) -> None:
    first = start_tailer()
    kube.create("", "v1", "services", NS, NAME, service([{"name": "forward", "port": first.port}]))
    log = tmp_path / "audit.log"
    append(log, *[event(i) for i in range(5)])
    fwd = start_forwarder(None, log, "--read-from-head", "true", "--tailer-service", f"{NS}/{NAME}",
                          "--kubeconfig", str(kube.kubeconfig), "--backoff-max", "300ms")
    wait_for(lambda: len(first.records()) == 5, what="5 events at the first tailer")

    second = start_tailer()  # the Service moves; the old tailer goes away
    svc = kube.get("", "services", NS, NAME)
    assert svc is not None
    svc["spec"]["ports"][0]["port"] = second.port
    kube.delete("", "services", NS, NAME)
    kube.create("", "v1", "services", NS, NAME, svc)
    first.stop()
    append(log, *[event(i) for i in range(5, 10)])
    wait_for(lambda: len(second.records()) == 5, what="5 more events at the second tailer")
    assert [r["seq"] for r in second.records()] == list(range(5, 10))
    connected = [e["tailer"] for e in fwd.logs() if e["event"] == "connected"]
    assert connected[0] == f"127.0.0.1:{first.port}" and connected[-1] == f"127.0.0.1:{second.port}"


def test_flags_in_groups_read_their_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from forwarder.cli import parse

    monkeypatch.setenv("AUDIT_FORWARDER_TAILER_SERVICE", f"{NS}/{NAME}")
    monkeypatch.setenv("AUDIT_FORWARDER_PROXY", "unix:///run/proxy.sock")
    monkeypatch.setenv("AUDIT_FORWARDER_CHUNK_EVENTS", "7")
    s = parse([])
    assert s.client.tailer_service == (NS, NAME) and s.batch.chunk_events == 7
    assert s.client.route.proxy_path == "/run/proxy.sock"
    assert s.client.route.tls_server_name == f"{NAME}.{NS}.svc"  # the cluster IP is rarely on the certificate
