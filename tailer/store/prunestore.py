"""Retention's writes, mixed into Store (base.py): delete batches and vacuum steps, each a short job in
a write transaction (tailer/store/retention.py decides how many rows, and when).

Where a job runs: with one writer (SQLite, ``folds_prunes``), inside the group commit of the chunks that
are waiting when it is asked for (last in their transaction, in a savepoint), so it costs them no commit
and no fsync of its own; when none waits, alone in the writer's idle time (``_alone``). A driver whose
writers run concurrently (PostgreSQL) runs it on a connection of its own (``_prune_job``), beside them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from tailer.store.chainstore import ChainStore

T = TypeVar("T")


@dataclass(eq=False)
class _Fold:
    """A short retention job (one delete batch, one vacuum step). When chunks are waiting it runs inside
    their group commit's transaction (no commit, so no fsync, of its own); else alone, in the writer's
    idle time."""
    fn: Callable[[Any], Any]
    future: asyncio.Future[Any]
    outcome: Any = None
    ran: bool = False


class PruneStore(ChainStore):
    """Uses Store's ``ph``, ``visible``, ``_transaction``, ``_drain`` and its group-commit state."""

    folds_prunes = True  # jobs ride in the chunks' group commits; False: ``_prune_job`` runs them
    last_prune_s = 0.0  # how long the last job's statements took (retention sizes batches by it)
    ph: str
    visible: str
    kind: str
    errors: tuple[type[BaseException], ...]
    _folds: deque[_Fold]
    _fold_now: _Fold | None
    _drainer: asyncio.Task[None] | None
    if TYPE_CHECKING:  # Store's, declared here for the type checker
        def _transaction(self) -> AbstractContextManager[Any]: ...
        async def _drain(self) -> None: ...
        def _describe(self, exc: BaseException) -> str: ...
        def is_transient(self, exc: BaseException) -> bool: ...

    async def prune(self, max_age: float | None, max_bytes: int | None, now: float | None = None) -> tuple[int, int]:
        """Retention once: (deleted by age, deleted by size). See retention.prune."""
        from tailer.store.retention import prune

        return await prune(self, max_age, max_bytes, now)

    async def delete_oldest(self, below: int | None, excess: int | None, max_rows: int) -> int:
        """Delete at most ``max_rows`` of the oldest rows, in one transaction: those with a sequence below
        ``below``, or as many as free ``excess`` bytes. Raises the pruned mark to the highest deleted."""
        return await self._prune_write(partial(self._delete_oldest, below, excess, max_rows))

    def _delete_oldest(self, below: int | None, excess: int | None, max_rows: int, conn: Any) -> int:
        # each statement returns one row: the batch's rows are found, counted and summed in the database
        p, vis = self.ph, self.visible
        where, args = (f"AND seq < {p}", [below]) if below is not None else ("", [])
        oldest = f"SELECT seq, bytes FROM audit_events WHERE {vis} {where} ORDER BY seq LIMIT {p}"
        last = f"(SELECT MAX(seq) FROM ({oldest}) AS o)"
        if excess is None:
            found = conn.execute(f"SELECT {last}", (*args, max_rows)).fetchone()
        else:  # the first of them whose running sum of bytes reaches ``excess``, else all of them
            run = f"SELECT seq, SUM(bytes) OVER (ORDER BY seq) AS run FROM ({oldest}) AS o"
            found = conn.execute(f"SELECT COALESCE((SELECT MIN(seq) FROM ({run}) AS r WHERE run >= {p}), {last})",
                                 (*args, max_rows, excess, *args, max_rows)).fetchone()
        if found is None or found[0] is None:
            return 0
        top = int(found[0])
        rows, size = self._delete_upto(conn, top)
        conn.execute(f"UPDATE audit_pruned SET max_seq = {p} WHERE id = 1 AND max_seq < {p}", (top, top))
        self._chain_pruned(conn, top)  # recorded, sealed: verify does not take it for tampering
        # last: on PostgreSQL, chunks committing beside this batch wait for this row only until it commits
        conn.execute(f"UPDATE audit_totals SET rows = rows - {p}, bytes = bytes - {p} WHERE id = 1", (rows, size))
        return rows

    def _delete_upto(self, conn: Any, top: int) -> tuple[int, int]:
        """Delete the rows up to ``top``: (rows, bytes) deleted. One writer: what is there is what goes."""
        p = self.ph
        found = conn.execute(f"SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM audit_events WHERE seq <= {p}",
                             (top,)).fetchone()
        conn.execute(f"DELETE FROM audit_events WHERE seq <= {p}", (top,))
        return int(found[0]), int(found[1])

    async def reclaim(self) -> None:
        """Give freed space back to the file system where the driver can (bounded work)."""

    # ---- where a job runs ----

    async def _prune_write(self, fn: Callable[[Any], T]) -> T:
        """Run one retention job (``fn(conn)``, its statements timed into ``last_prune_s``) in a write
        transaction: folded into the chunks' group commit, or on the driver's own ``_prune_job``."""
        def timed(conn: Any) -> T:
            start = time.perf_counter()
            try:
                return fn(conn)
            finally:
                self.last_prune_s = time.perf_counter() - start

        if not self.folds_prunes:
            return await self._prune_job(timed)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._folds.append(_Fold(timed, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name=f"{self.kind}-group-commit")
        return await future

    async def _prune_job(self, fn: Callable[[Any], T]) -> T:
        """A driver with concurrent writers: ``fn`` in a transaction of a connection of its own."""
        raise NotImplementedError

    def _fold(self, conn: Any) -> None:
        """In ``_insert``'s transaction, last: the retention job given to this group, in a savepoint (a
        job that fails is undone alone; the chunks still commit)."""
        fold = self._fold_now
        if fold is None:
            return
        from tailer.store.base import StoreError  # base imports this module

        conn.execute("SAVEPOINT retention")
        try:
            fold.outcome = fold.fn(conn)
        except Exception as exc:  # retention's to report (it tries again next time), never the chunks'
            conn.execute("ROLLBACK TO retention")
            fold.outcome = StoreError(f"{self.kind}: {self._describe(exc)}", isinstance(exc, self.errors)
                                      and self.is_transient(exc))
        conn.execute("RELEASE retention")
        fold.ran = True

    def _alone(self) -> AbstractContextManager[Any]:
        """The transaction of a retention job that runs alone (the driver may commit it more cheaply)."""
        return self._transaction()
