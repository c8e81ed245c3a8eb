"""PostgreSQL behind ``ports.Database`` (psycopg 3), for a directory index several frontends share.

The same shape as ``sqlite.py``, so feature code runs unchanged:

- One writer thread owns one connection. Writes are functions queued to it
  (:meth:`PgDatabase.execute_write_fn`); each runs inside one transaction,
  committed when it returns and rolled back when it raises. Other frontends
  may write to the same database at the same time (READ COMMITTED; the
  directory takes advisory locks where it checks before it writes:
  ``Dialect.lock``): a write that loses a deadlock or a serialization check
  is run again (up to :data:`WRITE_ATTEMPTS` times), so a write function must
  only touch the database.
- Reads run on ``readers`` connections, one thread each (:meth:`execute_fn`),
  each function in one ``REPEATABLE READ READ ONLY`` transaction: all its
  statements see one snapshot, as on SQLite.
- The queries are written for both engines: ``?`` placeholders are turned
  into psycopg's ``%s`` here (outside quoted literals; ``%`` doubled), rows
  answer by name and by position like ``sqlite3.Row``. ``lastrowid`` is
  always None: use ``RETURNING``.
- A connection found broken (PostgreSQL restarted) is replaced, and the job
  that found it is run again once on the new connection: a read always, a
  write when the connection broke before its transaction committed.
- Readers' statements stop after ``statement_timeout`` seconds (a search too
  broad to finish in time says "narrow your search": :class:`BadRequest`).
- psycopg errors become :class:`StorageError` (cause kept) whose message says
  what to do (``pg_sql.py``); the DSN's password never appears in a message.
- The schema is a tuple of :class:`PgMigration`, applied at open under an
  advisory lock, the version kept in table ``pasar_schema``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import psycopg
from psycopg import errors as pg_errors

from ..core.errors import BadRequest, StorageError
from .pg_sql import PgConnection as PgConnection
from .pg_sql import PgCursor as PgCursor
from .pg_sql import PgRow as PgRow
from .pg_sql import _row_factory as _row_factory
from .pg_sql import describe as describe
from .pg_sql import pg_sql as pg_sql
from .pg_sql import storage_error as storage_error

if TYPE_CHECKING:
    from ..core import ports

log = logging.getLogger(__name__)
T = TypeVar("T")
WRITE_ATTEMPTS = 3
CONNECT_TIMEOUT = 10
STATEMENT_TIMEOUT = 5.0  # seconds a reader's statement may run (a search over a million listings: narrow it)


@dataclass(frozen=True)
class PgMigration:
    """One numbered step of a PostgreSQL schema (``sql`` may hold several statements, no parameters)."""

    version: int
    name: str
    sql: str


_RETRY = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


# -- the database ------------------------------------------------------------------
@dataclass
class _Write(Generic[T]):
    fn: Callable[[PgConnection], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]

    def settle(self, outcome: T | BaseException) -> None:
        def on_loop() -> None:
            if self.future.done():  # the awaiting task was cancelled; the write still happened
                return
            if isinstance(outcome, BaseException):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)

        try:
            self.loop.call_soon_threadsafe(on_loop)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            log.warning("a database write finished after its event loop closed")


class PgDatabase:
    """One PostgreSQL database: one writer thread, ``readers`` reader threads (satisfies ``ports.Database``)."""

    def __init__(
        self,
        dsn: str,
        migrations: Sequence[PgMigration] = (),
        *,
        component: str,
        readers: int = 2,
        statement_timeout: float = STATEMENT_TIMEOUT,
    ) -> None:
        if [m.version for m in migrations] != list(range(1, len(migrations) + 1)):
            raise ValueError("migrations must be numbered 1, 2, 3, ... in order")
        if readers < 1:
            raise ValueError("readers must be at least 1")
        self.dsn = dsn
        self.where = describe(dsn)
        self.component = component
        self.schema_version = 0
        self._migrations = tuple(migrations)
        self._queue: queue.SimpleQueue[_Write[Any] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers = readers
        self._timeout_ms = max(0, round(statement_timeout * 1000))  # 0: no limit
        self._wconn: psycopg.Connection[PgRow] | None = None
        self._read_pool: queue.SimpleQueue[psycopg.Connection[PgRow]] = queue.SimpleQueue()
        self._read_executor = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="pasar-pg-read")
        self._open = False
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------
    async def open(self) -> None:
        """Connect, apply the migrations, start the writer and the readers."""
        if self._open or self._closed:
            raise RuntimeError("a PgDatabase opens once")
        ready: Future[None] = Future()
        self._writer = threading.Thread(target=self._write_loop, args=(ready,), name="pasar-pg-write", daemon=True)
        self._writer.start()
        try:
            await asyncio.wrap_future(ready)
            loop = asyncio.get_running_loop()
            for _ in range(self._readers):
                self._read_pool.put(await loop.run_in_executor(self._read_executor, self._connect_reader))
        except BaseException:
            await self.close()
            raise
        self._open = True

    async def close(self) -> None:
        """Let queued writes finish, then close every connection; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._writer.join)
        await asyncio.to_thread(self._read_executor.shutdown, True)
        while not self._read_pool.empty():
            self._read_pool.get_nowait().close()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.where} is closed (the node is shutting down): try again after it restarts")
        if not self._open:
            raise RuntimeError("PgDatabase.open() was not awaited")

    def _connect(self) -> psycopg.Connection[PgRow]:
        try:
            return psycopg.connect(self.dsn, autocommit=True, row_factory=_row_factory, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.ProgrammingError:  # not chained: libpq's text quotes the string, password included
            raise StorageError(
                "directory_dsn is not a valid PostgreSQL connection string: write key=value pairs such as "
                "'host=/run/postgresql dbname=pasar' (quote values with spaces) or a postgresql:// URI"
            ) from None
        except psycopg.Error as exc:
            raise storage_error(exc, self.where) from exc

    def _connect_reader(self) -> psycopg.Connection[PgRow]:
        conn = self._connect()
        try:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(self._timeout_ms),))
        except psycopg.Error as exc:
            conn.close()
            raise storage_error(exc, self.where) from exc
        return conn

    @staticmethod
    def _lost(conn: psycopg.Connection[PgRow]) -> bool:
        return conn.broken or conn.closed

    def _fresh(self, conn: psycopg.Connection[PgRow], *, reader: bool) -> psycopg.Connection[PgRow]:
        """``conn``, or a new connection if it is broken (StorageError if PostgreSQL is still away)."""
        if not self._lost(conn):
            return conn
        conn.close()
        return self._connect_reader() if reader else self._connect()

    # -- writes --------------------------------------------------------------------
    async def execute_write_fn(self, fn: Callable[[PgConnection], T]) -> T:
        """Run ``fn`` on the writer thread in one transaction; its result, or its exception."""
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Write(fn, loop, future))
        return await future

    def _write_loop(self, ready: Future[None]) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # handed to open(), which raises it
            ready.set_exception(exc)
            return
        try:
            self.schema_version = self._migrate(conn)
        except BaseException as exc:
            conn.close()
            ready.set_exception(exc)
            return
        self._wconn = conn
        ready.set_result(None)
        try:
            while (job := self._queue.get()) is not None:
                try:
                    outcome: Any = self._write(job.fn)
                except BaseException as exc:  # handed to the awaiting task; the writer lives on
                    outcome = exc
                job.settle(outcome)
        finally:
            self._wconn.close()

    def _write(self, fn: Callable[[PgConnection], T]) -> T:
        """``fn`` in one transaction; run again after a deadlock or a serialization failure (up to
        WRITE_ATTEMPTS), and once on a new connection when the old one broke before the commit."""
        attempt, reconnected = 1, False
        while True:
            assert self._wconn is not None
            conn = self._wconn = self._fresh(self._wconn, reader=False)
            returned = False
            try:
                with conn.transaction():
                    result = fn(PgConnection(conn))
                    returned = True
                return result
            except _RETRY as exc:
                if attempt == WRITE_ATTEMPTS:
                    raise storage_error(exc, self.where) from exc
                attempt += 1
                log.info("%s: a write met another frontend's (%s); running it again", self.where, exc)
            except (psycopg.InterfaceError, pg_errors.SyntaxError):
                raise  # a bug, shown as it is
            except psycopg.OperationalError as exc:
                if returned or reconnected or not self._lost(conn):  # a lost COMMIT may have committed
                    raise storage_error(exc, self.where) from exc
                reconnected = True
                log.warning("%s: the connection was lost (%s); reconnecting to run the write again", self.where, exc)
            except psycopg.Error as exc:
                raise storage_error(exc, self.where) from exc

    # -- reads ---------------------------------------------------------------------
    async def execute_fn(self, fn: Callable[[PgConnection], T]) -> T:
        """Run ``fn`` on a reader connection in one read-only snapshot."""
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_executor, self._read, fn)

    async def execute(self, sql: str, params: ports.SqlParams = ()) -> list[PgRow]:
        """The rows of one query (read-only)."""
        return await self.execute_fn(lambda conn: conn.execute(sql, params).fetchall())

    def _read(self, fn: Callable[[PgConnection], T]) -> T:
        conn = self._read_pool.get()
        try:
            for attempt in (1, 2):
                conn = self._fresh(conn, reader=True)
                try:
                    return self._read_once(conn, fn)
                except pg_errors.QueryCanceled:
                    raise
                except psycopg.OperationalError as exc:
                    if attempt == 2 or not self._lost(conn):
                        raise
                    log.warning("%s: a reader's connection was lost (%s); reconnecting", self.where, exc)
            raise AssertionError("unreachable")
        except pg_errors.QueryCanceled as exc:
            seconds = f"{self._timeout_ms / 1000:g}"
            raise BadRequest(
                f"this search took longer than {seconds} s and was stopped: narrow your search "
                "(more or longer words, a category, a price range)"
            ) from exc
        except (psycopg.InterfaceError, pg_errors.SyntaxError):
            raise
        except psycopg.Error as exc:
            raise storage_error(exc, self.where) from exc
        finally:
            self._read_pool.put(conn)

    @staticmethod
    def _read_once(conn: psycopg.Connection[PgRow], fn: Callable[[PgConnection], T]) -> T:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            return fn(PgConnection(conn))
        finally:
            if not conn.broken:
                conn.execute("ROLLBACK")

    # -- schema --------------------------------------------------------------------
    def _migrate(self, conn: psycopg.Connection[PgRow]) -> int:
        """Apply the missing migrations (one transaction, under an advisory lock); the version reached."""
        known = len(self._migrations)
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pasar-schema-{self.component}",))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS pasar_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
                )
                row = conn.execute(
                    "SELECT version FROM pasar_schema WHERE component = %s", (self.component,)
                ).fetchone()
                current = 0 if row is None else int(row[0])
                if current > known:
                    raise StorageError(
                        f"{self.where} has {self.component} schema version {current}, but this pasar knows "
                        f"versions up to {known}: it was written by a newer pasar. Run that version (or a newer "
                        "one), or point directory_dsn at another database."
                    )
                for migration in self._migrations[current:]:
                    conn.execute(migration.sql.encode())
                    log.info("%s: applied schema migration %d (%s)", self.where, migration.version, migration.name)
                conn.execute(
                    "INSERT INTO pasar_schema (component, version) VALUES (%s, %s) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (self.component, known),
                )
        except psycopg.Error as exc:
            raise storage_error(exc, self.where) from exc
        return known


if TYPE_CHECKING:

    def _satisfies_the_port(db: PgDatabase) -> ports.Database:
        return db
