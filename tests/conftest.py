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


class DaemonProcess:
    """A real daemon process (``python -m <module>``): JSON logs to a file, probes and metrics over HTTP."""

    module = ""
    probe = "/healthz"

    def __init__(self, stderr_path: Path, stdout_path: Path | None, args: list[str], http_port: int) -> None:
        self.stderr_path, self.stdout_path = stderr_path, stdout_path
        self.args, self.http_port = args, http_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Any:
        with self.stderr_path.open("ab") as err:
            out = self.stdout_path.open("ab") if self.stdout_path else subprocess.DEVNULL
            try:
                self.proc = subprocess.Popen([sys.executable, "-m", self.module, *self.args], stdout=out, stderr=err,
                                             env=python_env())
            finally:
                if self.stdout_path:
                    out.close()  # type: ignore[union-attr]
        if wait:
            wait_for(self.ready, 30, f"{self.module} {self.probe}")
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.module} exited {self.proc.returncode}: {self.stderr()[-2000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.http_port}{self.probe}", timeout=1).status_code == 200
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
        text = httpx.get(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5).text
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
        for line in text.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class TailerProcess(DaemonProcess):
    """A real ``audit-tailer`` process on free loopback ports; stdout (the events) captured to a file."""

    module = "tailer.cli"
    probe = "/readyz"

    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = free_port()
        http_port = free_port()
        super().__init__(tmp / f"tailer-{self.port}.err", tmp / f"tailer-{self.port}.out",
                         ["--listen", f"127.0.0.1:{self.port}", "--http-listen", f"127.0.0.1:{http_port}",
                          "--log-level", "debug", "--data-dir", str(tmp / f"data-{self.port}"), *args], http_port)

    def records(self) -> list[dict[str, Any]]:
        assert self.stdout_path is not None
        data = self.stdout_path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        return [orjson.loads(line) for line in complete.splitlines()]


class ForwarderProcess(DaemonProcess):
    """A real ``audit-forwarder`` process following ``log_path``."""

    module = "forwarder.cli"

    def __init__(self, tmp: Path, tailer_port: int | None, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        http_port = free_port()
        tailer = ["--tailer", f"127.0.0.1:{tailer_port}"] if tailer_port is not None else []  # else in args
        super().__init__(tmp / "forwarder.err", None,
                         [*tailer, "--audit-log-path", str(log_path),
                          "--http-listen", f"127.0.0.1:{http_port}", "--log-level", "debug", *args], http_port)


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
    from tests.helpers.pki import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


def live_children(parent: int | None = None) -> set[tuple[int, str]]:
    """(pid, name) of the live (not zombie) children of ``parent`` (default: this process)."""
    me = str(os.getpid() if parent is None else parent)
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name, rest = stat.split(" (", 1)[1].rsplit(") ", 1)
        state, ppid = rest.split()[:2]
        if ppid == me and state != "Z":
            found.add((int(entry), name))
    return found


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """A test that leaves a child process running fails (fixtures stop what they start)."""
    before = live_children()
    yield
    left = live_children() - before
    assert not left, f"processes left running: {sorted(left)}"
@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """One PostgreSQL server for the session; fails (never skips) when it cannot start."""
    from tests.helpers.pgserver import PostgresServer

    server = PostgresServer(free_port())
    try:
        server.start()
    except Exception as exc:
        server.stop()
        pytest.fail(f"cannot start PostgreSQL for the store tests: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: an SQLite file, or a fresh database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "store" / "audit.db")
    return str(request.getfixturevalue("postgres").new_database())
