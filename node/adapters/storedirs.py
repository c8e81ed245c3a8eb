"""The folders of a data directory's stores: making one, moving one to ``deleted/``, crash leftovers.

Called on the storage thread only (``store.Storage``), which holds the data
dir's lock, so nothing else writes these folders meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..core.errors import Conflict, NotFound, StorageError
from .fsutil import atomic_write, fsync_dir, make_private_dir
from .jsonstore import remove_stale_temp_files

log = logging.getLogger(__name__)


def store_names(stores_dir: Path) -> list[str]:
    """The onion addresses of the stores under ``stores_dir`` (folders with a key file)."""
    if not stores_dir.exists():
        return []
    return sorted(p.name for p in stores_dir.iterdir() if (p / "key").exists() and not p.name.startswith("."))


def remove_leftovers(data_dir: Path, stores_dir: Path) -> None:
    """Temp files and half-made stores left by a crash (kill -9) of an earlier owner.

    We hold the data dir's lock and every writer of these folders holds it
    too, so nothing else can be writing them: whatever matches is stale.
    """
    dirs = [data_dir]
    for store in store_names(stores_dir):
        dirs += [stores_dir / store, stores_dir / store / "images"]
    removed = [p for d in dirs for p in remove_stale_temp_files(d)]
    if stores_dir.exists():
        for half_made in stores_dir.glob(".new-*"):  # create_store cut off before its rename
            shutil.rmtree(half_made, ignore_errors=True)
            removed.append(half_made)
    if removed:
        names = ", ".join(p.name for p in removed)
        log.info("removed %d file(s) left by an interrupted write: %s", len(removed), names)


def write_new_store(stores_dir: Path, onion: str, seed: bytes, doc: dict[str, Any]) -> None:
    """``stores/<onion>`` with its key, ``store.json`` (``doc``) and images folder, or nothing.

    Everything is written under ``.new-<onion>`` and renamed into place, so a
    crash leaves no half-made store (``remove_leftovers`` clears the rest).
    """
    final = stores_dir / onion
    if final.exists():
        raise Conflict(f"store {onion} already exists")
    tmp = stores_dir / f".new-{onion}"
    shutil.rmtree(tmp, ignore_errors=True)
    make_private_dir(tmp / "images")
    atomic_write(tmp / "key", seed)
    atomic_write(tmp / "store.json", json.dumps(doc, ensure_ascii=False).encode())
    os.rename(tmp, final)
    fsync_dir(stores_dir)


def move_to_trash(data_dir: Path, stores_dir: Path, onion: str) -> Path:
    """Move ``stores/<onion>`` to ``deleted/<onion>-<UTC time>/`` (its database closed first by the caller)."""
    source = stores_dir / onion
    trash = data_dir / "deleted"
    make_private_dir(trash)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target, n = trash / f"{onion}-{stamp}", 1
    while target.exists():
        n += 1
        target = trash / f"{onion}-{stamp}-{n}"
    try:
        os.rename(source, target)
    except OSError as exc:
        raise StorageError(f"could not move store {onion} to {target} ({exc.strerror}); nothing was deleted") from exc
    fsync_dir(stores_dir)
    fsync_dir(trash)
    return target


def require_store(stores_dir: Path, onion: str) -> None:
    if not (stores_dir / onion / "store.json").is_file():
        raise NotFound(f"no store {onion}")
