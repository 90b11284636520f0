"""README.md holds: every metric it names is real (and every real one is named), every shell example is run
or parsed by a test, and the claims about flags and token files are what the code does."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from forwarder.metrics import ForwarderMetrics
from tailer.metrics import TailerMetrics
from tools.flagtable import PARSERS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
METRIC = re.compile(r"`((?:forwarder|tailer)_[a-z_]+)(\{[a-z_,]+\})?`")


def registry_metrics(metrics: object) -> dict[str, tuple[str, ...]]:
    """Exposed name (counters with _total) -> label names, from the registry object's attributes."""
    out = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = value._name + ("_total" if value._type == "counter" else "")
            out[name] = tuple(value._labelnames)
    return out


REAL = registry_metrics(ForwarderMetrics()) | registry_metrics(TailerMetrics())
# the two metric lists: the paragraphs that say "(all of them; a test checks this list against the code)"
LISTS = [para for para in README.split("\n\n") if "(all of them; a test checks this list" in para]


def test_every_metric_the_readme_names_is_real_with_its_labels() -> None:
    assert len(LISTS) == 2
    named = [m for para in LISTS for m in METRIC.findall(para)]
    named += [m for m in METRIC.findall(README) if m[0].endswith(("_total", "_seconds"))]  # in the prose too
    assert len(named) > 30
    for name, labels in named:
        assert name in REAL, f"README names {name}, which no registry has"
        if labels:
            assert tuple(labels.strip("{}").split(",")) == REAL[name], (name, labels, REAL[name])


def test_every_real_metric_is_in_the_readme_lists() -> None:
    listed = {name: labels for para in LISTS for name, labels in METRIC.findall(para)}
    for name, labels in REAL.items():
        assert name in listed, f"{name} is missing from README's metric lists"
        if labels:
            assert listed[name] == "{" + ",".join(labels) + "}", name


def shell_commands() -> list[str]:
    """Every command line of README's ```sh blocks, continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


COMMANDS = shell_commands()
# what runs the examples that are not parsed here
ELSEWHERE = {"./run demo": "tests/integration/test_demo.py", "./run test": "CI (.ci/run)",
             "kubectl audit": "tests/integration/test_readme_examples.py", "export": "the same",
             "docker compose": "tests/unit/test_deploy.py and tests/integration/test_compose_loopback.py",
             "kind/e2e.sh": "needs Docker", "docker build": "needs Docker",
             "python -m tools.krew": "tests/integration/test_krew.py",
             "kubectl krew install": "no krew here: tests/integration/test_krew.py installs as krew does",
             "helm install": "no helm here: tests/unit/test_chart.py renders and validates the chart",
             "kubectl apply -f kind/": "needs a cluster: tests/unit/test_manifests.py validates them offline",
             "kind/api-install.sh": "needs a cluster: kind/e2e.sh runs it",
             "kubectl get apiservice": "needs a cluster: kind/e2e.sh checks it"}


def test_every_shell_example_is_covered() -> None:
    assert len(COMMANDS) >= 10
    for command in COMMANDS:
        assert command.startswith(("audit-forwarder ", "audit-tailer ", *ELSEWHERE)), command


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith(("audit-forwarder ", "audit-tailer "))])
def test_daemon_examples_parse(command: str) -> None:
    program, *args = shlex.split(command)
    parsed = PARSERS[program.removeprefix("audit-")]().parse_args(args)
    assert parsed is not None


def test_retention_flags_as_the_readme_says() -> None:
    parser = PARSERS["tailer"]()
    assert parser.parse_args(["--retention-bytes", "0"]).retention_bytes == 0  # "0 or unlimited: no limit"
    assert parser.parse_args(["--retention-bytes", "unlimited"]).retention_bytes == 0
    assert "| `--retention-age` | `AUDIT_TAILER_RETENTION_AGE` | `30d` |" in README
    assert "| `--retention-bytes` | `AUDIT_TAILER_RETENTION_BYTES` | `unlimited` |" in README


def test_readme_token_example_works_in_a_file_named_tokens(tmp_path: Path) -> None:
    from tailer.api.authz import parse_token_file

    example = re.search(r"```csv\n(.*?)```", README, re.DOTALL)
    assert example is not None
    path = tmp_path / "tokens"
    path.write_text(example.group(1))
    tokens = parse_token_file(path.read_text(), str(path))
    assert sorted(ns for _, ns in tokens.values()) == [frozenset({"*"}), frozenset({"shop", "staging"})]
    yaml_tokens = tmp_path / "tokens.txt"
    yaml_tokens.write_text("[{token: s3cr3t-admin, user: admin, namespaces: ['*']}]\n")
    assert len(parse_token_file(yaml_tokens.read_text(), str(yaml_tokens))) == 1
    settings = PARSERS["tailer"]().parse_args(["--token-file", str(path)])
    assert settings.token_file == str(path)


def test_kubectl_audit_errors_are_one_line(tmp_path: Path) -> None:
    """README: "Errors are one line" -- also for a kubeconfig that is not YAML."""
    import sys

    from tests.conftest import python_env

    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nclusters: [\n  - {bad")
    proc = subprocess.run([sys.executable, "-m", "kubectl_audit.cli", "databases", "orders", "-n", "shop",
                           "--kubeconfig", str(broken)], cwd=ROOT, env=python_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "not valid YAML" in proc.stderr


def test_run_installs_once_and_waits_for_the_dpkg_lock(tmp_path: Path) -> None:
    import hashlib
    import os
    import sys

    text = (ROOT / "run").read_text()
    assert "DPkg::Lock::Timeout=600" in text
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"  # the test's own interpreter, with its packages, as the venv's
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    stamp = venv / ".kube-audit-forwarder-installed"
    stamp.write_text(hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest() + "\n")
    env = dict(os.environ, VENV=str(venv))
    proc = subprocess.run([str(ROOT / "run"), "demo", "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "--out" in proc.stdout
    assert "installing" not in proc.stderr  # the stamp matches pyproject.toml: nothing is installed again
