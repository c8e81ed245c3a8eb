"""A TinyDB storage that never loses an acknowledged write.

TinyDB's own JSONStorage truncates and rewrites its file in place, so a crash
mid-write can leave half a file. This one writes a temp file, fsyncs it,
renames it over the old one and fsyncs the directory. It keeps the parsed data
in memory (TinyDB re-reads storage on every operation) and can group several
TinyDB operations into one write with ``batch()``.

A process killed between creating its temp file and the rename leaves that
file behind (as big as the database); ``remove_stale_temp_files`` clears them
when the data directory is next opened.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

from ..core.errors import StorageError
from .fsutil import atomic_write

# fsutil.atomic_write writes ``.<name>.<pid>.tmp`` beside the file it replaces.
TEMP_NAME = re.compile(r"^\.[^/]+\.[0-9]+\.tmp$")


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """Delete ``directory``'s files named like atomic_write's temp files; returns them.

    Only for a directory whose writers all hold the data dir's lock, called by
    the holder: then every such file was left by a writer that died (kill -9,
    power cut). The pid in the name is not checked: after a crash, and across
    reboots, pids are reused by unrelated processes.
    """
    removed = []
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"cannot list {directory}: {exc.strerror}") from exc
    for path in entries:
        if TEMP_NAME.match(path.name) and path.is_file() and not path.is_symlink():
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StorageError(f"cannot remove the stale temp file {path}: {exc.strerror}; remove it") from exc
            removed.append(path)
    return removed


class AtomicJSONStorage(Storage):
    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._data: dict[str, dict[str, Any]] | None = None
        self._deferred = 0
        self._dirty = False

    def read(self) -> dict[str, dict[str, Any]] | None:
        if self._data is None:
            if not self._path.exists():
                return None
            try:
                self._data = json.loads(self._path.read_bytes())
            except (OSError, ValueError) as exc:
                raise StorageError(f"cannot read {self._path}: {exc}") from exc
        return self._data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        self._data = data
        if self._deferred:
            self._dirty = True
            return
        self._flush()

    def _flush(self) -> None:
        try:
            payload = json.dumps(self._data, ensure_ascii=False, separators=(",", ":"))
            atomic_write(self._path, payload.encode("utf-8"))
        except OSError as exc:
            self._data = None  # memory may be ahead of disk: reload on next read
            raise StorageError(f"cannot write {self._path}: {exc}") from exc
        except BaseException:
            self._data = None  # a bug (data JSON cannot hold): nothing written; it surfaces as itself
            raise
        self._dirty = False

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group writes: one atomic file write at the end, none on error."""
        self._deferred += 1
        done = False
        try:
            yield
            done = True
        finally:
            self._deferred -= 1
            if not done:  # any exception, cancellation included: drop the unwritten changes
                self._data, self._dirty = None, False
        if not self._deferred and self._dirty:
            self._flush()

    def close(self) -> None:
        self._data = None
