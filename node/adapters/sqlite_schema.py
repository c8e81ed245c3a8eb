"""Schema of a SQLite database: numbered migrations tracked by ``PRAGMA user_version``.

A database's schema is a tuple of :class:`Migration`, numbered 1, 2, 3, ...
in the order they were written; a released migration is never edited, a
change is a new migration at the end. ``PRAGMA user_version`` holds the
number of the last one applied. At open, :func:`migrate` applies the missing
ones in order, each in its own transaction together with the new
``user_version``, so a crash leaves the database at one version or the next,
never in between. A database written by a newer pasar (``user_version``
higher than the code knows) is refused: this code cannot know what changed.

Only the writer thread of :class:`node.adapters.sqlite.SQLiteDatabase` calls
these functions; sqlite3 errors are left for it to translate.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import StorageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    """One numbered step: ``sql`` (statements separated by ``;``), then ``step`` for what SQL cannot say."""

    version: int
    name: str
    sql: str = ""
    step: Callable[[sqlite3.Connection], None] | None = None


def check_numbering(migrations: Sequence[Migration]) -> None:
    """Migrations must be numbered 1..n in order (a programming error otherwise)."""
    numbers = [m.version for m in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3, ... in order; got {numbers}")


def statements(script: str) -> list[str]:
    """``script`` split into complete statements (``;`` inside strings and trigger bodies is kept)."""
    found: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    if pending.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement in migration: {pending.strip()[:80]!r}")
    return [s for s in found if s.strip(" \t\r\n;")]


def user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration], path: Path) -> int:
    """Bring the database at ``conn`` up to ``len(migrations)``; returns that version."""
    current = user_version(conn)
    known = len(migrations)
    if current > known:
        raise StorageError(
            f"{path} has schema version {current}, but this pasar knows versions up to {known}: "
            "it was written by a newer pasar. Run that version (or a newer one), "
            "or restore a backup of the file made before the upgrade."
        )
    for migration in migrations[current:]:
        _apply(conn, migration)
        log.info("%s: applied schema migration %d (%s)", path.name, migration.version, migration.name)
    return known


def _apply(conn: sqlite3.Connection, migration: Migration) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in statements(migration.sql):
            conn.execute(statement)
        if migration.step is not None:
            migration.step(conn)
        # user_version lives in the database header: it commits or rolls back with the migration.
        conn.execute(f"PRAGMA user_version = {int(migration.version)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def require_fts5(conn: sqlite3.Connection) -> None:
    """The search index needs FTS5: fail at open, not at the first search."""
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.pasar_fts5_probe USING fts5(body)")
    except sqlite3.OperationalError as exc:
        raise StorageError(
            f"this Python's SQLite {sqlite3.sqlite_version} has no FTS5 full-text search, which pasar needs: "
            "run pasar with a Python whose sqlite3 module is built with FTS5 "
            "(python.org's builds and most Linux distributions' are)"
        ) from exc
    conn.execute("DROP TABLE temp.pasar_fts5_probe")
