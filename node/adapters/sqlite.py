"""SQLite for write-heavy data (orders, outboxes, peers, the search index), in Datasette's shape.

- One writer thread owns the only read-write connection. Writes are functions
  queued to it (:meth:`SQLiteDatabase.execute_write_fn`) and awaited from the
  event loop; each runs inside one ``BEGIN IMMEDIATE`` transaction, committed
  when it returns and rolled back when it raises. Writes are therefore
  serialised: a write function may read, decide and write (check a stock,
  then insert an order) with no other write in between, so UNIQUE and
  CHECK constraints are a backstop, and breaking one is reported as a bug.
- Reads run on a small pool of read-only connections, one thread each
  (:meth:`execute_fn`, :meth:`execute`). Each read function sees one
  snapshot. In WAL mode readers never wait for the writer: they see the last
  committed data while a write is under way.
- Nothing blocks the event loop: the loop only puts functions on a queue and
  awaits futures.
- ``synchronous=FULL`` by default: in WAL mode ``NORMAL`` is also safe from
  corruption, but a power cut may undo the last commits, and an order or an
  escrow state that the node already confirmed to a buyer must not come
  undone. ``FULL`` costs one fsync per commit. Data that can be rebuilt (the
  search index) may pass ``synchronous="NORMAL"``.
- ``foreign_keys=ON`` (SQLite's default is off) and ``busy_timeout`` on
  every connection, so another process holding a lock (a ``sqlite3`` shell,
  a backup) is waited for a moment before the write fails.
- The schema is a tuple of numbered migrations (``sqlite_schema.py``),
  applied at open; FTS5 is required at open (the search index uses it).
- sqlite3 errors become :class:`StorageError` (cause kept) whose message
  tells the operator what to do; misuse of the sqlite3 API
  (``ProgrammingError``, ``InterfaceError``) is a bug and is left as it is.
- :meth:`close` lets the queued writes finish, then closes every connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from ..core.errors import StorageError
from .sqlite_schema import Migration, check_numbering, migrate, require_fts5

if TYPE_CHECKING:
    from ..core import ports

log = logging.getLogger(__name__)
T = TypeVar("T")
Params = Sequence[object] | Mapping[str, object]
BUSY_TIMEOUT_MS = 5000
# The databases open in this process, by resolved path (a backup snapshots each on its own writer thread).
_OPEN: weakref.WeakValueDictionary[Path, SQLiteDatabase] = weakref.WeakValueDictionary()


# -- errors --------------------------------------------------------------------
_ADVICE = {
    sqlite3.SQLITE_BUSY: "{path} is locked by another process: stop the other program using it "
    "(another pasar, a sqlite3 shell, a backup tool) and try again",
    sqlite3.SQLITE_LOCKED: "{path} is locked: stop the other program using it and try again",
    sqlite3.SQLITE_FULL: "the disk holding {path} is full: free some space and try again",
    sqlite3.SQLITE_READONLY: "{path} is read-only: check the permissions of the file and its folder, "
    "and that the disk is not mounted read-only",
    sqlite3.SQLITE_PERM: "no permission to use {path}: check the permissions of the file and its folder",
    sqlite3.SQLITE_CANTOPEN: "cannot open {path}: check that its folder exists and this user may write there",
    sqlite3.SQLITE_IOERR: "a disk error while using {path}: check the disk (and dmesg) and its free space",
    sqlite3.SQLITE_CORRUPT: "{path} is damaged: stop the node, move the file aside and restore it from a backup",
    sqlite3.SQLITE_NOTADB: "{path} is not a SQLite database (damaged or overwritten): stop the node, "
    "move the file aside and restore it from a backup",
    sqlite3.SQLITE_CONSTRAINT: "a write to {path} broke a rule of the database: this is a bug in pasar, "
    "please report it with the log",
}


def storage_error(exc: sqlite3.Error, path: Path) -> StorageError:
    """``exc`` as a StorageError whose message says what to do (raise it ``from exc``)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    advice = _ADVICE.get(primary) if primary is not None else None
    if advice is None:
        advice = "a database error on {path}: this may be a bug in pasar, the log has the details"
    return StorageError(f"{advice.format(path=path)} ({exc})")


def _translated(fn: Callable[[], T], path: Path) -> T:
    try:
        return fn()
    except (sqlite3.ProgrammingError, sqlite3.InterfaceError):
        raise  # API misuse: a bug, shown as it is
    except sqlite3.Error as exc:
        raise storage_error(exc, path) from exc


# -- the writer thread -----------------------------------------------------------
@dataclass
class _Write(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    transaction: bool = True  # False: ``fn`` runs outside a transaction (a snapshot through the backup API)

    def run(self, conn: sqlite3.Connection, path: Path) -> None:
        try:
            result = _translated(lambda: _in_transaction(conn, self.fn) if self.transaction else self.fn(conn), path)
        except BaseException as exc:  # handed to the awaiting task, which raises it; the writer lives on
            error = exc  # ``exc`` is unbound after this block; the loop sets it later
            self._hand_back(lambda: self.future.set_exception(error), error)
        else:
            self._hand_back(lambda: self.future.set_result(result), None)

    def _hand_back(self, settle: Callable[[], None], exc: BaseException | None) -> None:
        def on_loop() -> None:
            if not self.future.done():  # done = the awaiting task was cancelled; the write still happened
                settle()

        try:
            self.loop.call_soon_threadsafe(on_loop)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            log.warning("a database write finished after its event loop closed", exc_info=exc)


def _in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        if not conn.in_transaction:
            raise RuntimeError("a write function must not commit or roll back itself: return or raise instead")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class SQLiteDatabase:
    """One SQLite file: one writer thread, ``readers`` read-only connections (satisfies ``ports.Database``)."""

    def __init__(
        self,
        path: Path,
        migrations: Sequence[Migration] = (),
        *,
        readers: int = 2,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        check_numbering(migrations)
        if readers < 1:
            raise ValueError("readers must be at least 1")
        self.path = path
        self.schema_version = 0
        self._migrations = tuple(migrations)
        self._synchronous = synchronous
        self._queue: queue.SimpleQueue[_Write[Any] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._read_pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._readers = readers
        self._read_executor = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="pasar-sqlite-read")
        self._open = False
        self._closed = False

    # -- lifecycle -----------------------------------------------------------
    async def open(self) -> None:
        """Create or upgrade the file, check FTS5, start the writer and the readers."""
        if self._open or self._closed:
            raise RuntimeError("a SQLiteDatabase opens once")
        ready: Future[None] = Future()
        self._writer = threading.Thread(
            target=self._write_loop, args=(ready,), name=f"pasar-sqlite-write {self.path.name}", daemon=True
        )
        self._writer.start()
        try:
            await asyncio.wrap_future(ready)
            loop = asyncio.get_running_loop()
            for _ in range(self._readers):
                conn = await loop.run_in_executor(self._read_executor, self._connect_reader)
                self._read_pool.put(conn)
        except BaseException:
            await self.close()
            raise
        self._open = True
        _OPEN[self.path.resolve()] = self

    @staticmethod
    def opened(path: Path) -> SQLiteDatabase | None:
        """The database open on ``path`` in this process, if any."""
        return _OPEN.get(path.resolve())

    async def close(self) -> None:
        """Let queued writes finish, then close every connection; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if _OPEN.get(self.path.resolve()) is self:
            del _OPEN[self.path.resolve()]
        if self._writer is not None:
            self._queue.put(None)  # stop, after every write queued so far
            await asyncio.to_thread(self._writer.join)
        await asyncio.to_thread(self._read_executor.shutdown, True)
        while not self._read_pool.empty():
            self._read_pool.get_nowait().close()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.path.name} is closed (the node is shutting down): try again after it restarts")
        if not self._open:
            raise RuntimeError("SQLiteDatabase.open() was not awaited")

    # -- writes --------------------------------------------------------------
    async def execute_write_fn(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the writer thread in one transaction; its result, or its exception.

        Cancelling the awaiting task does not cancel a queued write.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Write(fn, loop, future))
        return await future

    async def snapshot(self, dest: Path) -> None:
        """A consistent copy of the database at ``dest`` (SQLite's backup API), made on the writer thread.

        Every write queued before it is in the copy, none after it; reads go on meanwhile.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Write(lambda conn: copy_database(conn, dest), loop, future, transaction=False))
        await future

    def _write_loop(self, ready: Future[None]) -> None:
        try:
            conn = _translated(self._connect_writer, self.path)
        except BaseException as exc:  # handed to open(), which raises it
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            while (task := self._queue.get()) is not None:
                task.run(conn, self.path)
        finally:
            conn.close()

    def _connect_writer(self) -> sqlite3.Connection:
        """Create (mode 0600) or open the file; WAL, pragmas, FTS5 check and migrations."""
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # -wal and -shm copy its mode
        except OSError as exc:
            raise StorageError(
                f"cannot open {self.path} ({exc.strerror}): check that its folder exists and this user may write there"
            ) from exc
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.row_factory = sqlite3.Row
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(
                    f"{self.path} cannot use write-ahead logging (journal mode {mode}): "
                    "keep the data directory on a local disk (not a network share)"
                )
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            _common_pragmas(conn)
            require_fts5(conn)
            self.schema_version = migrate(conn, self._migrations, self.path)
        except BaseException:
            conn.close()
            raise
        return conn

    # -- reads ---------------------------------------------------------------
    async def execute_fn(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on a read-only connection in a reader thread; it sees one snapshot."""
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_executor, self._read, fn)

    async def execute(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """The rows of one query (read-only)."""
        return await self.execute_fn(lambda conn: conn.execute(sql, params).fetchall())

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # The pool holds one connection per reader thread: get() never waits.
        conn = self._read_pool.get()
        try:
            return _translated(lambda: _in_snapshot(conn, fn), self.path)
        finally:
            self._read_pool.put(conn)

    def _connect_reader(self) -> sqlite3.Connection:
        def connect() -> sqlite3.Connection:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA query_only=ON")
            _common_pragmas(conn)
            return conn

        return _translated(connect, self.path)


def _common_pragmas(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def copy_database(conn: sqlite3.Connection, dest: Path) -> None:
    """``conn``'s database into a new file ``dest`` (mode 0600) in one backup step: one consistent snapshot."""
    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    target = sqlite3.connect(dest)
    try:
        conn.backup(target)
    finally:
        target.close()


def _in_snapshot(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN")  # one read transaction: every statement of fn sees the same commit
    try:
        return fn(conn)
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


if TYPE_CHECKING:

    def _satisfies_the_port(db: SQLiteDatabase) -> ports.Database:
        return db
