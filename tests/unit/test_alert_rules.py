"""The alerting rules (issue 12): promtool runs them on synthetic series (deploy/alerts.test.yml); the
PrometheusRule manifest and the Helm chart carry the same rules as the plain rules file; every metric they
use is one the tailer exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tailer.metrics import TailerMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PLAIN = yaml.safe_load((DEPLOY / "alerts.rules.yml").read_text())


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool (Debian package prometheus) is not installed: ./run test installs it"
    return found


def test_promtool_runs_the_rules_on_synthetic_series() -> None:
    done = subprocess.run([promtool(), "test", "rules", "alerts.test.yml"], cwd=DEPLOY, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "alerts.test.yml").read_text()))
    assert tested == {r["alert"] for g in PLAIN["groups"] for r in g["rules"]}  # every alert has a case


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """The test file can fail: the silent alert expected one evaluation too early."""
    text = (DEPLOY / "alerts.test.yml").read_text().replace("eval_time: 10m", "eval_time: 8m", 1)
    (tmp_path / "alerts.rules.yml").write_text((DEPLOY / "alerts.rules.yml").read_text())
    (tmp_path / "alerts.test.yml").write_text(text)
    done = subprocess.run([promtool(), "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "KubeAuditSourceSilent" in done.stdout + done.stderr


def test_the_prometheus_rule_and_the_chart_carry_the_same_rules() -> None:
    manifest = yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text())
    assert manifest["kind"] == "PrometheusRule" and manifest["spec"] == PLAIN
    chart = yaml.safe_load((ROOT / "chart" / "kube-audit-tailer" / "values.yaml").read_text())["alerts"]["rules"]
    by_name = {r["alert"]: r for r in chart}
    for group in PLAIN["groups"]:
        for rule in group["rules"]:
            assert by_name.get(rule["alert"]) == rule, rule["alert"]


def test_the_rules_use_real_metrics() -> None:
    names = set(TailerMetrics().registry._names_to_collectors)
    for group in PLAIN["groups"]:
        for rule in group["rules"]:
            for metric in re.findall(r"\b(tailer_[a-z_]+)", rule["expr"]):
                assert metric in names, f"{rule['alert']}: {metric}"
