"""The shared runtime in the real daemons: a dead task still runs the shutdown, one deadline bounds it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from kube_audit.contract import PREFIX
from tests.conftest import free_port, wait_for


def test_a_dead_task_stops_the_tailer_and_the_shutdown_still_runs(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    import kube_audit.runtime.observability as observability
    import tailer.app
    from tailer import cli

    async def broken_retention(*_: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(tailer.app, "retention_loop", broken_retention)
    monkeypatch.setattr(observability, "setup_logging", lambda *_: None)  # keep capture_logs in place
    argv = ["--listen", f"127.0.0.1:{free_port()}", "--http-listen", f"127.0.0.1:{free_port()}",
            "--data-dir", str(tmp_path), "--configmaps", "false", "--stdout", "false"]
    with capture_logs() as logs:
        assert cli.main(argv) == 1
    died = [e for e in logs if e["event"] == "task_died"]
    assert len(died) == 1 and died[0]["task"] == "store-retention" and "exc_info" in died[0]
    events = [e["event"] for e in logs]
    assert "tailer_stopping" in events and "tailer_stopped" in events and events[-1] == "daemon_failed"


def test_an_open_watch_does_not_outlive_the_shutdown_deadline(start_tailer) -> None:
    tailer = start_tailer("--api-auth", "none", "--shutdown-timeout", "1s", "--watch-poll", "50ms")
    ended: list[str] = []

    def watch() -> None:
        url = f"http://127.0.0.1:{tailer.http_port}{PREFIX}/events"
        try:
            with httpx.stream("GET", url, params={"watch": "true", "resourceVersion": "0"}, timeout=60) as resp:
                assert resp.status_code == 200
                for _ in resp.iter_lines():
                    pass
            ended.append("closed")
        except httpx.HTTPError as exc:
            ended.append(type(exc).__name__)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    wait_for(lambda: tailer.metric("tailer_api_watchers") == 1, what="the watch open")
    assert tailer.stop() == 0  # stop() kills the process after 20 s: the deadline is 1 s
    thread.join(10)
    assert ended
