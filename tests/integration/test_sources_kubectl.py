"""Sources through the aggregated API with real clients (issue 12): SubjectAccessReview on the resource
``sources`` against the fake Kubernetes API, a real kubectl printing the Table and the gap Warning."""

from __future__ import annotations

import json
from typing import Any

from kube_audit.model.source import OPTION, STATUS_TAG, GapReport, SourceId, Status
from tests.conftest import wait_for
from tests.helpers.sender import Sender
from tests.integration.test_api_kubectl import Setup, setup  # noqa: F401 - the fixture

GAP = GapReport("ino-7:100-900", "/var/log/audit/audit-1.log", 7, 800, "truncated",
                start="2026-11-20T10:00:00Z", end="2026-11-20T10:00:05Z")


def status() -> dict[str, Any]:
    return Status(SourceId("prod", "apiserver-0"), "0.12.0", "2026-11-20T08:00:00Z", "2026-11-20T10:01:00Z",
                  lag_bytes=100, gaps=(GAP,)).to_record()


def test_kubectl_get_sources_is_authorized_on_sources_and_lists_warn_of_gaps(setup: Setup) -> None:  # noqa: F811
    with Sender("127.0.0.1", setup.tailer.port) as sender:
        sender.send_chunk([status()], tag=STATUS_TAG, options={OPTION: {"source": "apiserver-0", "cluster": "prod"}})
    # system:masters may read auditevents everywhere, but not sources until RBAC says so
    denied = setup.kubectl("get", "sources.audit.kube-audit-forwarder.io", check=False)
    assert denied.returncode == 1 and 'cannot list resource "sources"' in denied.stderr
    setup.fake.tokens["ops-token"] = ("operator", ["ops"])  # answers are cached: a new subject, not a new rule
    for verb in ("get", "list"):
        setup.fake.allowed.add(("group:ops", verb, "sources", "*"))
    table = setup.kubectl("get", "sources.audit.kube-audit-forwarder.io", token="ops-token").stdout.splitlines()
    assert table[0].split() == ["NAME", "CLUSTER", "STATE", "LAST", "SEEN", "LAG", "GAP", "BYTES"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["apiserver-0"][1:3] == ["prod", "gap"] and rows["apiserver-0"][-2:] == ["100", "800"]
    assert rows["audit"][1] == "ok"  # the fixture's events: a peer that names nothing is known by its tag
    one = json.loads(setup.kubectl("get", "sources.audit.kube-audit-forwarder.io", "apiserver-0", "-o", "json",
                                   token="ops-token").stdout)
    assert one["kind"] == "Source" and one["gaps"][0]["reason"] == "truncated"
    missing = setup.kubectl("get", "sources.audit.kube-audit-forwarder.io", "nope", token="ops-token", check=False)
    assert missing.returncode == 1 and 'sources "nope" not found' in missing.stderr
    # the shop team reads its events; the range shown crosses the gap, and kubectl says so
    assert setup.audit("sources").returncode == 1
    listed = setup.audit("sources", token="ops-token")
    assert listed.returncode == 0  # sorted by cluster, then name
    assert [line.split()[:3] for line in listed.stdout.splitlines()[1:]] == [["audit", "<none>", "ok"],
                                                                               ["apiserver-0", "prod", "gap"]]
    wait_for(lambda: "Warning:" in setup.kubectl("get", "auditevents", "-n", "shop", token="shop-token").stderr,
             what="kubectl printing the gap warning")
    err = setup.kubectl("get", "auditevents", "-n", "shop", token="shop-token").stderr
    assert "Warning: the range shown crosses a known gap of source prod/apiserver-0: 800 bytes lost (truncated)" in err
