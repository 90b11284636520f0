"""The shared runtime (kube_audit/runtime/lifecycle.py): guarded tasks, one deadline, forced exit."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from kube_audit.runtime.lifecycle import Deadline, Runtime, run
from tests.conftest import ROOT, python_env, wait_for


def test_a_dead_task_stops_the_daemon_with_its_traceback_and_the_shutdown_still_runs() -> None:
    ran: list[str] = []

    async def start(rt: Runtime) -> None:
        async def boom() -> None:
            await asyncio.sleep(0)
            raise ValueError("broken")

        async def stop_stage(_: Deadline) -> None:
            ran.append("stage stopped")

        rt.on_shutdown("stage", stop_stage)
        rt.spawn(boom(), "worker")

    with capture_logs() as logs:
        status = run(start, shutdown_timeout=5.0)
    assert status == 1
    assert ran == ["stage stopped"]
    died = [e for e in logs if e["event"] == "task_died"]
    assert len(died) == 1 and died[0]["task"] == "worker" and isinstance(died[0]["exc_info"], ValueError)


def test_a_task_that_returns_on_its_own_is_a_failure_too() -> None:
    async def start(rt: Runtime) -> None:
        async def done() -> None:
            return None

        rt.spawn(done(), "quitter")

    with capture_logs() as logs:
        assert run(start, shutdown_timeout=1.0) == 1
    assert [e["task"] for e in logs if e["event"] == "task_died"] == ["quitter"]


def test_one_deadline_for_every_step_and_a_hanging_step_does_not_skip_the_rest() -> None:
    seen: list[tuple[str, float]] = []

    async def start(rt: Runtime) -> None:
        async def hangs(deadline: Deadline) -> None:
            seen.append(("hangs", deadline.left()))
            await asyncio.Event().wait()

        async def later(deadline: Deadline) -> None:
            seen.append(("later", deadline.left()))

        async def closes() -> None:
            seen.append(("closed", 0.0))

        async def forever() -> None:
            await asyncio.Event().wait()

        rt.on_exit("resource", closes)
        rt.on_shutdown("later", later)  # registered first: runs after "hangs"
        rt.on_shutdown("hangs", hangs)
        rt.spawn(forever(), "loop")  # cancelled after the steps, not waited for
        rt.stop.set()

    with capture_logs() as logs:
        assert run(start, shutdown_timeout=0.2) == 0
    assert [name for name, _ in seen] == ["hangs", "later", "closed"]
    assert seen[1][1] == 0.0  # the same deadline: nothing left after the step that hung
    assert [e["step"] for e in logs if e["event"] == "shutdown_step_timed_out"] == ["hangs"]
    assert not [e for e in logs if e["event"] == "task_died"]


def test_a_failing_start_still_shuts_down_what_started_and_raises() -> None:
    stopped: list[str] = []

    async def start(rt: Runtime) -> None:
        async def stop_http(_: Deadline) -> None:
            stopped.append("http")

        rt.on_shutdown("http", stop_http)
        raise RuntimeError("bad configuration")

    try:
        run(start, shutdown_timeout=1.0)
    except RuntimeError as exc:
        assert str(exc) == "bad configuration"
    else:
        raise AssertionError("the start-up error must propagate")
    assert stopped == ["http"]


def test_the_default_executor_says_who_used_it_and_named_executors_are_bounded() -> None:
    got: dict[str, Any] = {}

    async def start(rt: Runtime) -> None:
        got["value"] = await asyncio.to_thread(lambda: 42)
        pool = rt.executor("stdout", 1)
        assert rt.executor("stdout") is pool and pool._max_workers == 1
        got["thread"] = await asyncio.get_running_loop().run_in_executor(
            pool, lambda: __import__("threading").current_thread().name)
        rt.stop.set()

    with capture_logs() as logs:
        assert run(start, shutdown_timeout=1.0) == 0
    assert got["value"] == 42 and got["thread"].startswith("stdout")
    used = [e for e in logs if e["event"] == "default_executor_used"]
    assert len(used) == 1 and "lambda" in used[0]["function"]


SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from kube_audit.runtime.lifecycle import run
    from kube_audit.runtime.observability import setup_logging

    setup_logging("info")

    async def start(rt):
        async def hang(deadline):
            print("stopping", flush=True)
            await asyncio.Event().wait()
        rt.on_shutdown("hang", hang)
        print("started", flush=True)

    sys.exit(run(start, shutdown_timeout=3600))
""")


def test_a_second_signal_forces_the_exit(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with out.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=fh, stderr=subprocess.PIPE,
                                env=python_env(), cwd=ROOT)
    try:
        wait_for(lambda: b"started" in out.read_bytes(), what="start")
        os.kill(proc.pid, signal.SIGTERM)
        wait_for(lambda: b"stopping" in out.read_bytes(), what="shutdown begun")
        assert proc.poll() is None  # the first signal waits for the shutdown (an hour here)
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(20) == 1
        assert proc.stderr is not None and b'"forced_exit"' in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()
