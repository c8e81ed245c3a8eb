"""Node-wide ed25519 keys kept in the data directory (the node onion's, the directory onion's).

Each is a 32-byte seed in its own file, mode 0600, written crash-safely once
and then only read. A damaged file stops the node with the fix: a new key
would silently change the onion address peers know.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.crypto import StoreKey
from ..core.errors import StorageError
from .fsutil import atomic_write

SEED_BYTES = 32


def load_or_create(path: Path) -> StoreKey:
    """The key in ``path``, made (and saved) on first use."""
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        key = StoreKey.generate()
        atomic_write(path, key.seed, mode=0o600)
        return key
    except OSError as exc:
        raise StorageError(f"cannot read {path} ({exc.strerror}): check its permissions") from exc
    if len(seed) != SEED_BYTES:
        raise StorageError(
            f"{path} is damaged ({len(seed)} bytes, a key is {SEED_BYTES}): restore it from a backup; "
            "deleting it makes a new key and a new onion address"
        )
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)
    return StoreKey(seed)
