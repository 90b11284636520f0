"""./run demo as a new user sees it: a short story, nothing lost through a rotation and two restarts, a history
with real times, and the full JSON lines kept in --out."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson

from tests.conftest import ROOT, python_env


def test_demo_tells_the_story_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "demo", "--out", str(out), "--pace", "0.02"], cwd=ROOT,
                          env=python_env(), capture_output=True, text=True, timeout=240)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    lines = text.splitlines()
    assert sum(max(1, -(-len(line) // 80)) for line in lines) < 100, text  # rows of an 80-column terminal
    rows = [line for line in lines if re.match(r"\[\s*\d+/40\] ", line)]
    assert all(len(r) <= 80 for r in rows)
    assert len(rows) == 40  # one row per event, each once, with its progress count
    assert [int(r[1:3]) for r in rows] == list(range(1, 41))
    for step in ("rotates audit.log", "kill -9 audit-forwarder", "audit-forwarder starts again",
                 "audit-tailer stops", "audit-tailer starts again"):
        assert sum(step in line for line in lines) >= 1, step
    assert "40 events written, 40 printed by the tailer, 40 in its store: none lost" in text

    history = lines[lines.index("$ kubectl audit history databases.example.com orders -n shop") + 1:]
    versions = [line.split() for line in history[1:5]]
    assert [v[0] for v in versions] == ["1", "2", "3", "4"], history[:6]
    assert [(v[2], v[3]) for v in versions] == [("alice@example.com", "create"), ("bob@example.com", "patch"),
                                                ("carol@example.com", "update"), ("alice@example.com", "delete")]
    times = [v[1] for v in versions]
    assert times == sorted(times) and len(set(times)) == 4
    assert any("spec.replicas: 1 -> 3" in line for line in history)
    assert any("spec.version" in line and '"16"' in line for line in history)  # the diff from 1 to 3

    # everything the tailer printed is kept, as full JSON lines, in the folder the demo named
    assert f"kept in {out}" in text
    events = [orjson.loads(line) for line in (out / "events.jsonl").read_bytes().splitlines()]
    assert len({e["auditID"] for e in events}) == 40 and len(events) >= 40
    for event in events:  # real, distinct times: the request is received before its response stage
        assert event["requestReceivedTimestamp"] < event["stageTimestamp"]
    assert len({e["requestReceivedTimestamp"] for e in events}) == 40
    assert len(list((out / "log").glob("audit-*.log"))) == 2 and (out / "forwarder.log").stat().st_size > 0


def test_demo_refuses_a_folder_in_use(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "demo", "--out", str(tmp_path)], cwd=ROOT, env=python_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is not empty" in proc.stderr


def test_demo_reads_nothing_from_tests() -> None:
    for path in (ROOT / "demo").glob("*.py"):
        assert "tests" not in re.findall(r"[\"'/](tests)[\"'/]", path.read_text(encoding="utf-8")), path
