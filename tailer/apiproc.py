"""The audit API in a process of its own (``--api-process``, the default once the API has its own HTTPS
port): ingest and the API each get an interpreter, a GIL and an event loop, so neither waits for the other.

Why: in one process, ingest at full speed keeps the one event loop and the one GIL busy. Every await of a
request then waited behind decode and parse steps, and every row a reader thread fetched from SQLite (each
step lets go of the GIL) waited for the GIL to come back (bench/api_latency.py on a quiet machine: list
p99 96 ms and versions p99 165 ms in process; 23 and 23 ms in a process of its own).

This module is the link between the two, and owns nothing else:

- the parent (``ApiProcess``) starts the child (spawn: the tailer has threads a fork would copy mid-lock),
  waits for it to listen, restarts it when it exits (quickly again: capped, jittered backoff; ingest goes
  on meanwhile), wakes its watchers after each commit, and asks it for its metrics on each scrape of
  /metrics; it stops it at shutdown (SIGTERM, then SIGKILL at the deadline);
- the child (``ChildLink``, used by tailer/app.py's ``api_process_main``) answers those and ends its
  runtime when the parent is gone (end of file on the wake pipe: a SIGKILLed parent leaves no orphan).

Two pipes: ``wake`` (parent to child, a byte per commit, never blocking: when it is full the child has
wakes to read anyway) and ``control`` (both ways: the child's ("ready", port) or ("failed", error), then
numbered metrics requests and their answers).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import generate_latest
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from kube_audit.runtime.lifecycle import Deadline
from kube_audit.runtime.observability import get_logger
from tailer.metrics import Families, TailerMetrics, is_api_family

log = get_logger(component="api-process")
START_TIMEOUT = 120.0  # seconds the child may take to open the store and listen
STEADY = 60.0  # a child that ran this long and then exited is restarted at once; sooner: backoff
METRICS_TIMEOUT = 2.0  # seconds a scrape waits for the child's metrics (then shows the tailer's own)


class ApiExited(RuntimeError):
    pass


async def _readable(fd: int, timeout: float | None = None) -> bool:
    """Whether ``fd`` became readable (data, end of file, or a process sentinel) within ``timeout``."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def woke() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, woke)
    try:
        await asyncio.wait_for(ready, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


class ApiProcess:
    """The parent's side: one child serving the API, kept running until ``stop``."""

    def __init__(self, target: Callable[..., Any], settings: Any, metrics: TailerMetrics) -> None:
        self.target, self.settings, self.metrics = target, settings, metrics
        self.port = settings.api.port  # the port the child listens on (a free one when 0: tests)
        self._proc: Any = None
        self._wake: Connection | None = None
        self._control: Connection | None = None
        self._asked = 0
        self._lock = asyncio.Lock()
        self._stopping = False

    async def start(self) -> None:
        """The first child, listening; its start-up error (a bad certificate, the store) is the tailer's."""
        await self._start_child()

    async def _start_child(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        wake_r, wake_w = ctx.Pipe(duplex=False)
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=self.target, args=(self.settings, self.port, wake_r, theirs), name="tailer-api")
        proc.start()
        wake_r.close()
        theirs.close()
        os.set_blocking(wake_w.fileno(), False)
        try:
            if not await _readable(mine.fileno(), START_TIMEOUT):
                raise ApiExited(f"the API process did not listen within {START_TIMEOUT:.0f} s")
            try:
                kind, value = mine.recv()
            except EOFError:
                proc.join(5)
                raise ApiExited(f"the API process exited at start (exit code {proc.exitcode})") from None
            if kind != "ready":
                raise ApiExited(f"the API process failed to start: {value}")
        except BaseException:
            self._kill(proc)
            wake_w.close()
            mine.close()
            raise
        self._proc, self._wake, self._control, self.port = proc, wake_w, mine, int(value)
        log.info("api_process_started", pid=proc.pid, port=self.port)

    async def supervise(self) -> None:
        """Restart the child whenever it exits, until ``stop``: at once after a steady run, else after a
        capped, jittered backoff (a child that cannot start again is retried every 30 s at most)."""
        while not self._stopping:
            retrying = AsyncRetrying(wait=wait_exponential_jitter(initial=0.5, max=30.0),
                                     retry=retry_if_exception_type(ApiExited), reraise=True)
            await retrying(self._run_once)

    async def _run_once(self) -> None:
        if self._proc is None:
            try:
                await self._start_child()
            except ApiExited as exc:
                log.error("api_process_start_failed", error=str(exc), note="retried with backoff; ingest goes on")
                raise
        proc, started = self._proc, time.monotonic()
        await _readable(proc.sentinel)
        proc.join(5)
        self._close_pipes()
        self._proc = None
        if self._stopping:
            return
        self.metrics.api_process_restarts.inc()
        log.error("api_process_exited", pid=proc.pid, exit_code=proc.exitcode,
                  note="the API is restarted; ingest goes on")
        if time.monotonic() - started < STEADY:
            raise ApiExited(f"exit code {proc.exitcode}")

    def wake(self) -> None:
        """After a commit: the child's watchers read the store now, not at their next poll."""
        if self._wake is not None:
            try:
                os.write(self._wake.fileno(), b"\0")
            except BlockingIOError:  # the child has unread wakes: one read will do for all
                pass
            except OSError:  # the child is gone: the supervisor restarts it
                pass

    async def metrics_text(self) -> bytes:
        """The child's metrics (the API's families), or nothing when it does not answer in time."""
        async with self._lock:
            conn = self._control
            if conn is None:
                return b""
            self._asked += 1
            try:
                conn.send(("metrics", self._asked))
                deadline = time.monotonic() + METRICS_TIMEOUT
                while await _readable(conn.fileno(), max(deadline - time.monotonic(), 0.0)):
                    n, text = conn.recv()
                    if n == self._asked:  # an answer to an earlier, timed-out scrape is dropped
                        return bytes(text)
            except (OSError, EOFError):
                pass
            return b""

    async def stop(self, deadline: Deadline) -> None:
        self._stopping = True
        proc = self._proc
        if proc is None or proc.exitcode is not None:
            return
        proc.terminate()  # the child's runtime stops its server and watches, then exits
        if not await _readable(proc.sentinel, max(deadline.left(), 0.1)):
            log.warning("api_process_killed", pid=proc.pid, note="it did not stop by the shutdown deadline")
            self._kill(proc)

    def _kill(self, proc: Any) -> None:
        if proc.exitcode is None:
            proc.kill()
        proc.join(5)

    def _close_pipes(self) -> None:
        for conn in (self._wake, self._control):
            if conn is not None:
                conn.close()
        self._wake = self._control = None


class ChildLink:
    """The child's side of the two pipes, on its event loop."""

    def __init__(self, wake: Connection, control: Connection, metrics: TailerMetrics,
                 on_wake: Callable[[], None], on_parent_gone: Callable[[], None]) -> None:
        self.wake, self.control, self.metrics = wake, control, metrics
        self.on_wake, self.on_parent_gone = on_wake, on_parent_gone

    def ready(self, port: int) -> None:
        self.control.send(("ready", port))
        loop = asyncio.get_running_loop()
        loop.add_reader(self.wake.fileno(), self._woken)
        loop.add_reader(self.control.fileno(), self._asked)

    def _woken(self) -> None:
        try:
            data = os.read(self.wake.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.on_wake()
        else:
            self._gone()

    def _asked(self) -> None:
        try:
            kind, n = self.control.recv()
        except (EOFError, OSError):
            self._gone()
            return
        if kind == "metrics":
            self.control.send((n, generate_latest(Families(self.metrics.registry, is_api_family))))

    def _gone(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.wake.fileno())
        loop.remove_reader(self.control.fileno())
        log.warning("api_process_parent_gone", note="the tailer that started this API process is gone: stopping")
        self.on_parent_gone()


def failed(control: Connection, exc: BaseException) -> None:
    """Tell the parent why the child could not start (it raises that as the tailer's start-up error)."""
    try:
        control.send(("failed", f"{exc}"))
    except OSError:
        pass
