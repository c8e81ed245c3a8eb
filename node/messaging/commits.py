"""Group commit: write functions awaited at the same time share one transaction (one fsync).

``messages.sqlite`` is ``synchronous=FULL``: every commit waits for the
disk (a few ms). When several exchanges are served at once, their writes
queue up behind the one in flight; the next transaction then runs all of
them, each still whole (they commit together or not at all), and each
caller gets its own result. Should the shared transaction fail, each
function is run again alone, so one caller's error is never another's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from ..core.ports import Database, SqlConnection

T = TypeVar("T")


@dataclass
class _Item:
    fn: Callable[[SqlConnection], Any]
    future: asyncio.Future[Any]


def _run_all(conn: SqlConnection, items: list[_Item]) -> list[Any]:
    return [item.fn(conn) for item in items]


class GroupCommit:
    """Writes through one ``ports.Database``, batched while a commit is in flight."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue: list[_Item] = []
        self._lock = asyncio.Lock()
        self._running: set[asyncio.Task[None]] = set()

    async def write(self, fn: Callable[[SqlConnection], T]) -> T:
        """Run ``fn`` in a write transaction (perhaps shared with others queued at the same time)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(fn, future))
        async with self._lock:
            if not future.done() and self._queue:
                batch, self._queue = self._queue, []
                task = asyncio.create_task(self._commit(batch))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
                # A cancelled waiter leaves the commit running: it settles every caller's future.
                await asyncio.wait([task])
        return cast(T, await future)

    async def _commit(self, batch: list[_Item]) -> None:
        if len(batch) == 1:
            await self._alone(batch[0])
            return
        try:
            results = await self._db.execute_write_fn(lambda conn: _run_all(conn, batch))
        except Exception:  # rolled back as a whole: each runs alone, so errors reach only their own caller
            for item in batch:
                await self._alone(item)
            return
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    async def _alone(self, item: _Item) -> None:
        try:
            result = await self._db.execute_write_fn(item.fn)
        except Exception as exc:
            if not item.future.done():
                item.future.set_exception(exc)
        else:
            if not item.future.done():
                item.future.set_result(result)
