"""Two forwarders of two clusters sending to one real tailer (chunks with the ``kube_audit`` option, as
the forwarder sends them): same-named objects keep separate histories, and kubectl and the plugin filter
and show where each event came from (issue 12)."""

from __future__ import annotations

import json
from typing import Any

from kube_audit.model.source import OPTION
from tests.conftest import wait_for
from tests.helpers.sender import Sender
from tests.integration.test_api_identity import us_copy
from tests.integration.test_api_kubectl import SCENARIO, Setup, setup  # noqa: F401 - the fixture


def forward(s: Setup, events: list[dict[str, Any]], cluster: str, source: str = "apiserver-0") -> None:
    with Sender("127.0.0.1", s.tailer.port) as sender:
        sender.send_chunk(events, options={OPTION: {"source": source, "cluster": cluster}})


def two_clusters(s: Setup) -> None:
    """``setup`` sent the scenario with no option (cluster "", source: the tag); eu and us send theirs."""
    forward(s, [{**e, "auditID": "eu-" + e["auditID"]} for e in SCENARIO], "eu")
    forward(s, [us_copy(e) for e in SCENARIO], "us")
    wait_for(lambda: s.tailer.metric("tailer_store_events_inserted_total") == 3 * len(SCENARIO) + 1, what="stored")


def test_two_clusters_keep_separate_histories(setup: Setup) -> None:  # noqa: F811
    two_clusters(setup)
    mixed = setup.audit("history", "deploy", "web")
    assert mixed.returncode == 1 and len(mixed.stderr.splitlines()) == 1, mixed.stderr
    assert mixed.stderr.startswith("error: conflict (409): ") and "'', 'eu', 'us'" in mixed.stderr
    assert "--cluster" in mixed.stderr
    eu = json.loads(setup.audit("history", "deploy", "web", "--cluster", "eu", "-o", "json").stdout)
    us = json.loads(setup.audit("history", "deploy", "web", "--cluster", "us", "-o", "json").stdout)
    assert {v["auditID"][:3] for v in eu["items"]} == {"eu-"} and {v["auditID"][:3] for v in us["items"]} == {"us-"}
    assert len(eu["items"]) == len(us["items"]) == 10
    unnamed = setup.audit("history", "deploy", "web", "--cluster", "")  # the forwarder without --cluster
    assert unnamed.returncode == 0 and len(unnamed.stdout.splitlines()) == 11, unnamed.stderr
    diff = setup.audit("diff", "deploy", "web", "--cluster", "us", "--field", "spec.replicas", "-o", "json")
    assert diff.returncode == 0, diff.stderr
    bisect = setup.audit("bisect", "deploy", "web", "--cluster", "us", "--field", "spec.replicas", "--value", "43")
    assert bisect.returncode == 0 and "= 43" in bisect.stdout, bisect.stderr
    assert setup.audit("bisect", "deploy", "web", "--cluster", "eu", "--field", "spec.replicas",
                       "--value", "43").returncode == 1  # eu never had 43 replicas


def test_lists_show_and_filter_where_events_came_from(setup: Setup) -> None:  # noqa: F811
    two_clusters(setup)
    rows = setup.audit("history").stdout.splitlines()  # more than one of each: both columns
    assert rows[0].split()[-2:] == ["CLUSTER", "SOURCE"] and len(rows) == 1 + 3 * len(SCENARIO)
    assert {tuple(r.split()[-2:]) for r in rows[1:]} == {("<none>", "audit"), ("eu", "apiserver-0"),
                                                          ("us", "apiserver-0")}  # no option: known by its tag
    same = setup.audit("history", "--source", "apiserver-0").stdout.splitlines()  # two clusters, one source
    assert same[0].split()[-2:] == ["CODE", "CLUSTER"] and len(same) == 1 + 2 * len(SCENARIO)
    one = setup.audit("history", "--cluster", "eu").stdout.splitlines()
    assert one[0].split()[-1] == "CODE" and len(one) == 1 + len(SCENARIO)  # one cluster: no column
    wide = setup.audit("history", "--cluster", "eu", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-2:] == ["CLUSTER", "SOURCE"] and wide[1].split()[-2:] == ["eu", "apiserver-0"]
    assert setup.audit("history", "--cluster", "nowhere").stdout.splitlines()[1:] == []
    got = setup.kubectl("get", "auditevents", "-n", "shop", "--field-selector", "cluster=us", "-o", "wide")
    lines = got.stdout.splitlines()
    assert lines[0].split()[-2:] == ["CLUSTER", "SOURCE"] and len(lines) == 1 + len(SCENARIO)
    assert {line.split()[-2] for line in lines[1:]} == {"us"}
