"""Real tailer processes with the ConfigMap sink on, against the fake Kubernetes API."""

from __future__ import annotations

from tests.conftest import wait_for
from tests.helpers.fakekube import FakeKube
from tests.helpers.sender import Sender
from tests.integration.test_configmaps import audit, entries, fake  # noqa: F401

FAST = ("--configmap-flush-interval", "50ms", "--configmap-retry-max-wait", "300ms")


def test_api_outage_never_blocks_acks_and_the_configmap_catches_up(start_tailer, fake: FakeKube) -> None:  # noqa: F811
    fake.create("example.com", "v1", "databases", "shop", "orders")
    fake.unavailable = True
    tailer = start_tailer("--kubeconfig", str(fake.kubeconfig), *FAST)
    events = [audit("patch", body={"spec": {"replicas": i}}) for i in range(30)]
    with Sender("127.0.0.1", tailer.port) as sender:
        for i in range(0, 30, 10):
            sender.send_chunk(events[i : i + 10])  # asserts the ack came back
    assert tailer.records() == events
    wait_for(lambda: tailer.metric("tailer_configmap_writes_total", result="unavailable") >= 2, what="retries")
    assert tailer.metric("tailer_configmap_pending_entries") == 30
    assert entries(fake) == []
    fake.unavailable = False
    wait_for(lambda: len(entries(fake)) == 30, what="catch-up")
    wait_for(lambda: tailer.metric("tailer_configmap_pending_entries") == 0, what="drained")
    assert [e["auditID"] for e in entries(fake)] == [e["auditID"] for e in events]
    names = [e["event"] for e in tailer.logs() if e.get("component") == "configmaps"]
    assert names.count("configmap_api_unavailable") == 1 and names.count("configmap_api_recovered") == 1
    assert names[0] == "configmaps_on"


def test_two_tailer_processes_share_a_configmap(start_tailer, fake: FakeKube) -> None:  # noqa: F811
    fake.create("example.com", "v1", "databases", "shop", "orders")
    a = start_tailer("--kubeconfig", str(fake.kubeconfig), *FAST)
    b = start_tailer("--kubeconfig", str(fake.kubeconfig), *FAST)
    events = [audit("patch", body={"spec": {"replicas": i}}) for i in range(60)]
    with Sender("127.0.0.1", a.port) as to_a, Sender("127.0.0.1", b.port) as to_b:
        for i in range(0, 60, 3):
            to_a.send_chunk(events[i : i + 2])
            to_b.send_chunk(events[i + 1 : i + 3])  # one event of each three goes to both replicas
    wait_for(lambda: len(entries(fake)) == 60, what="all entries")
    for t in (a, b):
        wait_for(lambda t=t: t.metric("tailer_configmap_pending_entries") == 0, what="drained")
    assert sorted(e["auditID"] for e in entries(fake)) == sorted(e["auditID"] for e in events)


def test_without_a_cluster_the_sink_is_off_and_the_rest_runs(start_tailer) -> None:
    tailer = start_tailer()
    with Sender("127.0.0.1", tailer.port) as sender:
        sender.send_chunk([audit("patch")])
    off = [e for e in tailer.logs() if e["event"] == "configmaps_off"]
    assert len(off) == 1 and off[0]["level"] == "warning"
    assert tailer.stop() == 0


def test_a_hanging_api_never_delays_an_ack(start_tailer, fake: FakeKube) -> None:  # noqa: F811
    names = [f"db{i}" for i in range(12)]
    for name in names:
        fake.create("example.com", "v1", "databases", "shop", name)
    fake.hang = True  # every request is held: no answer, no error
    tailer = start_tailer("--kubeconfig", str(fake.kubeconfig), "--shutdown-timeout", "1s", *FAST)
    with Sender("127.0.0.1", tailer.port, timeout=10) as sender:
        sender.send_chunk([audit("patch", name, body={"spec": {"replicas": 1}}) for name in names])
        wait_for(lambda: fake.hanging >= 6, what="ConfigMap writes stuck in the API")
        for i in range(5):  # acks keep coming while every write hangs (Sender fails on a 10 s wait)
            sender.send_chunk([audit("patch", names[i], body={"spec": {"replicas": 2}})])
    assert len(tailer.records()) == 17
    assert tailer.metric("tailer_configmap_writes_total", result="ok") == 0
    assert tailer.stop() == 0  # the shutdown deadline cancels the stuck writes
