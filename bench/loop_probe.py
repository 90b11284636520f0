"""A probe of the tailer's event loop, run inside the tailer process (bench/api_latency.py starts it).

Standard library only, and loaded by its path: the tailer it runs is the tree under test, not this one.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import os
import runpy
import sys
import time

TICK = 0.005  # the lag probe's period


def serve_with_probe(out: str, argv: list[str]) -> None:
    """Run the tailer with two probes on its event loop, appending to ``out`` (the bench picks its phase's
    window by monotonic time): a callback due every TICK, "lag <time> <seconds late>" when it ran more than
    1 ms late (wall time: on a shared machine, mostly other processes); and "step <time> <CPU s> <wall s>"
    for each loop step (one callback: a task running up to its next await) that took more than 2 ms of
    this thread's CPU (what the code holds the loop for, whatever the machine's load)."""
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    run = asyncio.events.Handle._run

    def timed(handle: asyncio.events.Handle) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            run(handle)
        finally:
            used = time.thread_time() - cpu
            if used > 0.002:
                os.write(fd, f"step {time.monotonic():.4f} {used:.4f} {time.perf_counter() - wall:.4f} "
                             f"{where(handle)}\n".encode())

    def where(handle: asyncio.events.Handle) -> str:
        """Where the task a step ran stopped: its await chain (or the callback)."""
        coro, out = getattr(getattr(handle, "_callback", None), "__self__", None), []
        coro = coro.get_coro() if isinstance(coro, asyncio.Task) else None
        while coro is not None:
            frame = getattr(coro, "cr_frame", None)
            if frame is not None:
                out.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            coro = getattr(coro, "cr_await", None)
        return ">".join(out) or repr(handle)[:80].replace(" ", "_")

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]

    class Policy(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            loop = super().new_event_loop()
            due = [loop.time() + TICK]

            def tick() -> None:
                now = loop.time()
                if now - due[0] > 0.001:
                    os.write(fd, f"lag {time.monotonic():.4f} {now - due[0]:.4f}\n".encode())
                due[0] = now + TICK
                loop.call_at(due[0], tick)

            loop.call_at(due[0], tick)
            return loop

    asyncio.set_event_loop_policy(Policy())
    sys.argv = ["tailer.cli", *argv]
    runpy.run_module("tailer.cli", run_name="__main__")
