"""The one runtime both daemons share: the only ``asyncio.run``, signals, guarded root tasks, named
executors and one shutdown deadline.

``run(start, shutdown_timeout=...)`` calls ``start(rt)``, which starts the stages, registers each
stage's stop with ``rt.on_shutdown`` as it starts it (they run in reverse order, the last started
first, like an exit stack), its long-lived tasks with ``rt.spawn`` and what those tasks use with
``rt.on_exit`` (closed after the tasks are done).
Then the daemon runs until SIGTERM/SIGINT or until a root task ends on its own: a task that raised is
logged with its traceback and makes the exit status 1; the shutdown runs either way. The shutdown gets
one ``Deadline``: every stage is handed the same one (what it does not finish by then is cancelled
and logged), then the root tasks still running are cancelled. A second SIGTERM/SIGINT exits at once
(status 1): an ack means durable, so what was not acked is resent by the peer or re-read from the
checkpoint.

Blocking work runs on named, bounded executors (``rt.executor("stdout", 1)``). The loop's default
executor is replaced by one that logs a warning the first time each function uses it (name resolution
through ``loop.getaddrinfo`` is its one expected user), so a stray ``asyncio.to_thread`` shows up in the
logs instead of silently sharing threads with another stage.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .observability import get_logger

log = get_logger(component="lifecycle")
EXPECTED_DEFAULT_USERS = frozenset({"getaddrinfo", "getnameinfo"})  # asyncio's own name resolution
CANCEL_GRACE = 1.0  # seconds a cancelled task gets to unwind once the deadline has passed
FORCED_EXIT_STATUS = 1


class TaskDied(RuntimeError):
    """A long-lived task ended although nobody asked it to stop."""


class Deadline:
    """One point in time for the whole shutdown; each stage asks how much is left."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + max(0.0, seconds)

    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.left() <= 0.0


class _DefaultExecutor(ThreadPoolExecutor):
    """The loop's default executor: small, and it says who uses it."""

    def __init__(self) -> None:
        super().__init__(max_workers=2, thread_name_prefix="default")
        self._seen: set[str] = set()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        name = _name(fn)
        if name not in EXPECTED_DEFAULT_USERS and name not in self._seen:
            self._seen.add(name)
            log.warning("default_executor_used", function=name,
                        note="give this work a named executor (Runtime.executor)")
        return super().submit(fn, *args, **kwargs)


def _name(fn: Any) -> str:
    """The function behind asyncio.to_thread's partial(Context.run, fn, ...)."""
    while isinstance(fn, functools.partial):
        fn = fn.args[0] if getattr(fn.func, "__name__", "") == "run" and fn.args else fn.func
    return str(getattr(fn, "__qualname__", None) or type(fn).__name__)


StopStep = Callable[[Deadline], Awaitable[None]]


class Runtime:
    """What a daemon's stages get from the runtime: the stop event, root tasks, executors, shutdown steps."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.failed: list[str] = []  # names of root tasks that died
        self._tasks: list[asyncio.Task[Any]] = []
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._steps: list[tuple[str, StopStep]] = []
        self._exits: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._stopping = False

    # --- tasks -------------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A guarded root task: if it ends before the shutdown began, the daemon stops."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            if not self._stopping:
                self.failed.append(task.get_name())
                log.error("task_died", task=task.get_name(), error="cancelled")
                self.stop.set()
            return
        exc = task.exception()
        if exc is not None:
            self.failed.append(task.get_name())
            log.error("task_died", task=task.get_name(), error=repr(exc), exc_info=exc)
            self.stop.set()
        elif not self._stopping and not self.stop.is_set():
            self.failed.append(task.get_name())
            log.error("task_died", task=task.get_name(), error="returned although nobody asked it to stop")
            self.stop.set()

    # --- executors ---------------------------------------------------------------------------
    def executor(self, name: str, workers: int = 1) -> ThreadPoolExecutor:
        """The named, bounded executor of one stage (created on first use, shut down at exit)."""
        pool = self._executors.get(name)
        if pool is None:
            pool = self._executors[name] = ThreadPoolExecutor(workers, thread_name_prefix=name)
        return pool

    # --- shutdown ----------------------------------------------------------------------------
    def on_shutdown(self, name: str, step: StopStep) -> None:
        """Run ``step(deadline)`` at shutdown, before the steps registered before it."""
        self._steps.append((name, step))

    def on_exit(self, name: str, close: Callable[[], Awaitable[None]]) -> None:
        """Run ``close()`` once the root tasks are done (reverse order of registration)."""
        self._exits.append((name, close))

    async def shutdown(self, deadline: Deadline) -> None:
        """Every step in order with what is left of ``deadline``; then cancel the remaining tasks."""
        self._stopping = True
        self.stop.set()
        log.info("shutdown_started", deadline_s=round(deadline.left(), 3))
        for name, step in reversed(self._steps):
            await self._step(name, step, deadline)
        left = [t for t in self._tasks if not t.done()]  # the stages' steps ended what should end
        for task in left:
            log.debug("task_cancelled", task=task.get_name())
            task.cancel()
        if left:
            _, still = await asyncio.wait(left, timeout=CANCEL_GRACE)
            for task in still:
                log.error("task_left_running", task=task.get_name())
        for name, close in reversed(self._exits):
            await self._step(name, _ignore_deadline(close), Deadline(CANCEL_GRACE + deadline.left()))
        for pool in self._executors.values():
            pool.shutdown(wait=False, cancel_futures=True)

    async def _step(self, name: str, step: StopStep, deadline: Deadline) -> None:
        # CancelledError is not caught: a cancelled shutdown stays cancelled
        try:
            async with asyncio.timeout(deadline.left() + CANCEL_GRACE):
                await step(deadline)
        except TimeoutError:
            log.error("shutdown_step_timed_out", step=name)
        except Exception as exc:  # noqa: BLE001 - one failed step must not skip the others
            log.error("shutdown_step_failed", step=name, error=repr(exc), exc_info=exc)


def _ignore_deadline(close: Callable[[], Awaitable[None]]) -> StopStep:
    async def step(_: Deadline) -> None:
        await close()

    return step


def run(start: Callable[[Runtime], Awaitable[None]], shutdown_timeout: float) -> int:
    """Run a daemon: ``start(rt)``, wait for a signal or a dead task, ``rt.shutdown``; 0 or 1.

    An exception from ``start`` (a configuration error found at start-up) propagates after the
    shutdown of what was started, so that the command line can map it to its exit status.
    """

    async def _main() -> int:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(_DefaultExecutor())
        rt = Runtime()
        signals = {"count": 0}
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, rt, sig, signals)
        try:
            await start(rt)
            await rt.stop.wait()
        finally:
            await rt.shutdown(Deadline(shutdown_timeout))
        if rt.failed:
            log.error("daemon_failed", tasks=rt.failed)
            return 1
        return 0

    return asyncio.run(_main())


def _on_signal(rt: Runtime, sig: signal.Signals, signals: dict[str, int]) -> None:
    signals["count"] += 1
    if signals["count"] == 1:
        log.info("signal_received", signal=sig.name)
        rt.stop.set()
        return
    log.warning("forced_exit", signal=sig.name, note="second signal: exiting without finishing the shutdown")
    os._exit(FORCED_EXIT_STATUS)
