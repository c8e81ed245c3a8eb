"""A TinyDB storage that never loses an acknowledged write.

TinyDB's own JSONStorage truncates and rewrites its file in place, so a crash
mid-write can leave half a file. This one writes a temp file, fsyncs it,
renames it over the old one and fsyncs the directory. It keeps the parsed data
in memory (TinyDB re-reads storage on every operation) and can group several
TinyDB operations into one write with ``batch()``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

from ..errors import StorageError
from ..fsutil import atomic_write


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
                raise StorageError(f"cannot read {self._path}: {exc}") from None
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
        except (OSError, TypeError, ValueError) as exc:
            self._data = None  # memory may be ahead of disk: reload on next read
            raise StorageError(f"cannot write {self._path}: {exc}") from None
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
