"""Group commit for ``Directory.index``: catalogs indexed at the same time share one write transaction.

The crawler indexes up to ``concurrency`` catalogs at once. Each FTS5 commit
writes a new index segment that later merges rewrite, so one transaction
per store costs more than one for several: concurrent ``index`` calls queue
their catalog, and whoever holds the lock writes everything queued so far
(up to :data:`MAX_BATCH_LISTINGS` listings) in one transaction. A lone call
is written at once, as before. If the transaction fails, every catalog in it
gets the error (they are rolled back together).

A caller cancelled while its batch is being written does not stop the
write, and the other callers of that batch still get their results (the
write runs in its own task, shielded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..core import ports
from . import directory_index as ix
from .models import Source, VerifiedCatalog

MAX_BATCH_LISTINGS = 5_000


def _no_lock(conn: ports.SqlConnection, stores: Sequence[str]) -> None:
    return None


@dataclass(eq=False)
class _Pending:
    catalog: VerifiedCatalog
    source: Source
    etag: str | None
    future: asyncio.Future[int]


@dataclass(eq=False)
class IndexBatcher:
    db: ports.Database
    caps: ix.Caps
    now: Callable[[], int]
    lock: Callable[[ports.SqlConnection, Sequence[str]], None] = _no_lock
    """Takes the batch's locks first in its transaction (``Dialect.lock``: PostgreSQL's per-store locks)."""
    _pending: list[_Pending] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def index(self, catalog: VerifiedCatalog, *, source: Source, etag: str | None) -> int:
        item = _Pending(catalog, source, etag, asyncio.get_running_loop().create_future())
        self._pending.append(item)
        async with self._lock:
            while any(p is item for p in self._pending):
                await self._write(self._take())
        return await item.future

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        listings = 0
        while self._pending and (not batch or listings + len(self._pending[0].catalog.listings) <= MAX_BATCH_LISTINGS):
            batch.append(self._pending.pop(0))
            listings += len(batch[-1].catalog.listings)
        return batch

    async def _write(self, batch: list[_Pending]) -> None:
        task = asyncio.ensure_future(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.shield(task)

    async def _run(self, batch: list[_Pending]) -> None:
        now, caps, lock = self.now(), self.caps, self.lock

        def write(conn: ports.SqlConnection) -> list[int]:
            lock(conn, [p.catalog.store for p in batch])
            return [ix.index_catalog(conn, p.catalog, source=p.source, etag=p.etag, now=now, caps=caps) for p in batch]

        try:
            counts = await self.db.execute_write_fn(write)
        except asyncio.CancelledError:  # the loop is shutting down
            for p in batch:
                p.future.cancel()
            raise
        except Exception as exc:  # handed to every caller of the batch, which raises it
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p, count in zip(batch, counts, strict=True):
            if not p.future.done():
                p.future.set_result(count)
