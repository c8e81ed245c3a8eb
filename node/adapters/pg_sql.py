"""psycopg 3 pieces of ``pg.py``: SQL text, rows, cursors and connections as the ports want them, and errors.

- The queries are written for both engines: ``?`` placeholders are turned
  into psycopg's ``%s`` here (outside quoted literals; ``%`` doubled), rows
  answer by name and by position like ``sqlite3.Row``. ``lastrowid`` is
  always None: use ``RETURNING``.
- psycopg errors become :class:`StorageError` (cause kept) whose message says
  what to do; the DSN (which may hold a password) never appears in a message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from ..core.errors import StorageError

if TYPE_CHECKING:
    from ..core import ports


# -- SQL text and rows -------------------------------------------------------------
@functools.lru_cache(maxsize=1024)
def pg_sql(sql: str) -> str:
    """``sql`` with ``?`` placeholders as ``%s`` (not inside '...' literals) and ``%`` as ``%%``."""
    out: list[str] = []
    quoted = False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        if ch == "%":
            out.append("%%")
        elif ch == "?" and not quoted:
            out.append("%s")
        else:
            out.append(ch)
    return "".join(out)


class PgRow(tuple[Any, ...]):
    """A row by position or column name, like ``sqlite3.Row``."""

    _index: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: psycopg.Cursor[Any]) -> Callable[[Sequence[Any]], PgRow]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> PgRow:
        row = tuple.__new__(PgRow, values)
        row._index = index
        return row

    return make


def _params(parameters: ports.SqlParams) -> Sequence[object]:
    if not isinstance(parameters, Sequence):
        raise TypeError("named parameters are not supported on PostgreSQL: use ? placeholders")
    return parameters


class PgCursor:
    """The ``ports.SqlCursor`` of one statement."""

    def __init__(self, cursor: psycopg.Cursor[PgRow]) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return None

    def fetchone(self) -> PgRow | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[PgRow]:
        return self._cursor.fetchall()


class PgConnection:
    """The ``ports.SqlConnection`` a read or write function gets."""

    def __init__(self, conn: psycopg.Connection[PgRow]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: ports.SqlParams = (), /) -> PgCursor:
        params = _params(parameters)
        cursor = self._conn.cursor()
        if params:
            cursor.execute(pg_sql(sql), params)
        else:
            cursor.execute(sql)  # no placeholders to fill: the text goes as written
        return PgCursor(cursor)

    def executemany(self, sql: str, parameters: Iterable[ports.SqlParams], /) -> PgCursor:
        rows = [_params(p) for p in parameters]
        cursor = self._conn.cursor()
        if rows:
            cursor.executemany(pg_sql(sql), rows)
        return PgCursor(cursor)


# -- errors ----------------------------------------------------------------------
def describe(dsn: str) -> str:
    """The DSN without secrets: ``database D on H``."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the PostgreSQL database of directory_dsn"
    host = str(info.get("host") or "the default host")
    return f"PostgreSQL database {info.get('dbname') or '(default)'} on {host}"


def storage_error(exc: psycopg.Error, where: str) -> StorageError:
    """``exc`` as a StorageError whose message says what to do (raise it ``from exc``)."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, pg_errors.DiskFull):
        advice = f"the disk of {where} is full: free some space on the database server"
    elif isinstance(exc, pg_errors.InsufficientPrivilege):
        advice = f"the user of directory_dsn lacks a privilege on {where}: make it the database's owner"
    elif isinstance(exc, pg_errors.UndefinedFile | pg_errors.FeatureNotSupported):
        advice = f"{where} lacks a feature pasar needs (the unaccent extension): install PostgreSQL's contrib modules"
    elif isinstance(exc, psycopg.OperationalError):
        advice = (
            f"cannot use {where}: check that PostgreSQL is running and that directory_dsn names a database "
            "this user may connect to"
        )
    elif isinstance(exc, psycopg.IntegrityError):
        advice = f"a write to {where} broke a rule of the database: this is a bug in pasar, please report it"
    else:
        advice = f"a database error on {where}: this may be a bug in pasar, the log has the details"
    return StorageError(f"{advice} ({detail})")
