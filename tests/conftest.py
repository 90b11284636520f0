"""Shared test helpers: free ports, waiting on conditions (never sleeps), real tailer processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
SAMPLE = DATA / "audit-sample.log"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)  # polling interval of the condition, not synchronisation
        delay = min(delay * 2, 0.1)


def sample_events() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in SAMPLE.read_bytes().splitlines() if line.strip()]


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["KUBECONFIG"] = str(ROOT / "tests" / "no-such-kubeconfig")  # never a developer's real cluster
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return env


class TailerProcess:
    """A real ``audit-tailer`` process on free loopback ports; stdout captured to a file."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.http_port = free_port()
        self.stdout_path = tmp / f"tailer-{self.port}.out"
        self.stderr_path = tmp / f"tailer-{self.port}.err"
        self.args = ["--listen", f"127.0.0.1:{self.port}", "--http-listen", f"127.0.0.1:{self.http_port}",
                     "--log-level", "debug", *args]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> TailerProcess:
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tailer.cli", *self.args], stdout=out, stderr=err, env=python_env()
            )
        wait_for(self.ready, 30, "tailer /readyz")
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"tailer exited {self.proc.returncode}: {self.stderr()}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.http_port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def records(self) -> list[dict[str, Any]]:
        data = self.stdout_path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        return [orjson.loads(line) for line in complete.splitlines()]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr().splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                pass
        return out

    def metric(self, name: str, **labels: str) -> float:
        return _metric(self.http_port, name, **labels)

    def stop(self) -> int:
        return _stop(self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class ForwarderProcess:
    """A real ``audit-forwarder`` process; logs (JSON) to a file, metrics on a free port."""

    def __init__(self, tmp: Path, tailer_port: int | None, log_path: Path, *args: str) -> None:
        self.http_port = free_port()
        self.log_path = log_path
        self.stderr_path = tmp / "forwarder.err"
        tailer = ["--tailer", f"127.0.0.1:{tailer_port}"] if tailer_port is not None else []  # else in args
        self.args = [*tailer, "--audit-log-path", str(log_path),
                     "--http-listen", f"127.0.0.1:{self.http_port}", "--log-level", "debug", *args]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> ForwarderProcess:
        with self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "forwarder.cli", *self.args],
                                         stdout=subprocess.DEVNULL, stderr=err, env=python_env())
        if wait:
            wait_for(self.ready, 30, "forwarder /healthz")
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"forwarder exited {self.proc.returncode}: {self.stderr()[-2000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr().splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                pass
        return out

    def metric(self, name: str, **labels: str) -> float:
        return _metric(self.http_port, name, **labels)

    def stop(self) -> int:
        return _stop(self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _metric(port: int, name: str, **labels: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def _stop(proc: subprocess.Popen[bytes] | None) -> int:
    if proc is None:
        return 0
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return int(proc.returncode)


@pytest.fixture
def start_forwarder(tmp_path: Path) -> Iterator[Callable[..., ForwarderProcess]]:
    started: list[ForwarderProcess] = []

    def _start(tailer_port: int | None, log_path: Path, *args: str, wait: bool = True) -> ForwarderProcess:
        fwd = ForwarderProcess(tmp_path, tailer_port, log_path, *args).start(wait)
        started.append(fwd)
        return fwd

    yield _start
    for fwd in started:
        fwd.stop()


@pytest.fixture
def start_tailer(tmp_path: Path) -> Iterator[Callable[..., TailerProcess]]:
    started: list[TailerProcess] = []

    def _start(*args: str) -> TailerProcess:
        tailer = TailerProcess(tmp_path, *args).start()
        started.append(tailer)
        return tailer

    yield _start
    for tailer in started:
        tailer.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.pki import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))
