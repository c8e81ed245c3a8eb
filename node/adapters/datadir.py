"""One process per data directory: an flock on ``node.lock``, which also tells the CLI how to reach the node."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from ..core.errors import NodeBusy


def read_lock_info(data_dir: Path) -> dict[str, Any]:
    """What the process holding the data dir wrote into node.lock (may be empty)."""
    try:
        info = json.loads((data_dir / "node.lock").read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


class DataDirLock:
    """An exclusive flock on ``node.lock``; the kernel drops it if we die."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "node.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = read_lock_info(self.path.parent).get("pid", "?")
            raise NodeBusy(
                f"the data directory is in use by another Pasar process (pid {pid}); stop it first"
            ) from None
        self._fd = fd

    def publish(self, info: dict[str, Any]) -> None:
        """Tell other processes (the CLI) how to reach this node."""
        assert self._fd is not None
        data = json.dumps(info).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
