"""The one place that owns the event loop: signals set a stop event, named tasks are watched."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Iterable

from .observability import get_logger

log = get_logger(component="lifecycle")


class TaskDied(RuntimeError):
    """A long-lived task ended although nobody asked it to stop."""


def run(main: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """Run ``main(stop)`` until it returns; SIGTERM and SIGINT set ``stop``."""

    async def _runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, stop, sig)
        return await main(stop)

    return asyncio.run(_runner())


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("signal_received", signal=sig.name)
    stop.set()


async def wait_stop_or_death(stop: asyncio.Event, tasks: Iterable[asyncio.Task[object]]) -> None:
    """Return when ``stop`` is set; raise ``TaskDied`` if a watched task ends first."""
    stopper = asyncio.ensure_future(stop.wait())
    watched = list(tasks)
    try:
        done, _ = await asyncio.wait([stopper, *watched], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    for task in watched:
        if task in done:
            exc = task.exception() if not task.cancelled() else None
            log.error("task_died", task=task.get_name(), error=repr(exc))
            raise TaskDied(f"task {task.get_name()} ended: {exc!r}") from exc


async def cancel_all(tasks: Iterable[asyncio.Task[object]], deadline: float) -> None:
    """Cancel tasks and wait at most ``deadline`` seconds for them; log any that linger."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        _, still = await asyncio.wait(pending, timeout=deadline)
        for task in still:
            log.warning("task_left_running", task=task.get_name())
