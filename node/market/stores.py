"""Rules over the set of a node's stores: finding one by name or address, unique names, ports.

Pure functions over the store records (``Market`` reads them from storage and
holds the lock that makes check-then-write safe).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..core import addresses
from ..core.errors import Conflict, NotFound, ValidationError
from ..core.models import StoreRecord
from . import profile as P

MIN_STORE_PORT = 1024
Record = StoreRecord


@dataclass(frozen=True)
class DeletedStore:
    onion: str
    name: str
    moved_to: Path  # <data-dir>/deleted/<onion>-<time>: move it back to stores/<onion> to restore


def port_value(value: object) -> int | None:
    """A port number from JSON, a form or the CLI; None for ``"auto"``."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and MIN_STORE_PORT <= value <= 65535:
        return value
    raise ValidationError({"port": f'must be a whole number from {MIN_STORE_PORT} to 65535, or "auto"'})


def next_port(used: set[int], base: int, reserved: frozenset[int]) -> int | None:
    """The lowest port from ``base`` not used by a store; None when base is 0."""
    if base == 0:
        return None
    port = base
    while port in used or port in reserved:
        port += 1
    if port > 65535:
        raise Conflict("no free port left for a new store; lower store_port_base")
    return port


def refuse_taken_port(records: Iterable[Record], onion: str, wanted: int, reserved: frozenset[int]) -> None:
    """A ValidationError when ``wanted`` is the admin listener's port or another store's."""
    if wanted in reserved:
        raise ValidationError({"port": f"{wanted} is the admin listener's port; choose another"})
    if any(s["port"] == wanted for s in records if s["onion"] != onion):
        raise ValidationError({"port": f"{wanted} is another store's port; choose another"})


def _ambiguous(ref: str, by_name: set[str], by_prefix: set[str]) -> str:
    if len(by_name) > 1:
        return (
            f"{len(by_name)} stores are named {ref!r}: give the onion address instead "
            "(see `pasar store list`), or rename one of them"
        )
    if len(by_prefix) > 1 and not by_name:
        return f"{ref!r} begins {len(by_prefix)} stores' addresses; give more of the address"
    return f"{ref!r} is one store's name and the start of another's address; give the full onion address"


def resolve(records: list[Record], ref: str) -> str:
    """A store by its full onion address; else by exact name or unique address prefix (6+).

    A full address always wins. Otherwise the name (compared with
    ``profile.name_key`` on the ref as typed, so ``Shop.`` and
    ``Best.onion`` are names) and the address prefix are looked up
    together: when they point at different stores the ref is refused as
    ambiguous, so no name can capture another store's address.
    """
    address = addresses.normalize(ref)
    for s in records:
        if s["onion"] == address:
            return s["onion"]
    key = P.name_key(ref)
    by_name = {s["onion"] for s in records if P.name_key(s["profile"]["name"]) == key}
    by_prefix = {s["onion"] for s in records if len(address) >= 6 and s["onion"].startswith(address)}
    found = by_name | by_prefix
    if len(found) == 1:
        return found.pop()
    if not found:
        raise NotFound(
            f"no store matches {ref!r}: give its onion address, a unique prefix of it (6+ characters) "
            "or its name (see `pasar store list`)"
        )
    raise Conflict(_ambiguous(ref, by_name, by_prefix))


def refuse_taken_name(records: Iterable[Record], name: str, own: str | None) -> None:
    """A ValidationError if another store has this name, or the name begins another store's address."""
    key, address = P.name_key(name), addresses.normalize(name)
    for s in records:
        if s["onion"] == own:
            continue
        if P.name_key(s["profile"]["name"]) == key:
            raise ValidationError(
                {"name": f"another store is already named {s['profile']['name']!r} (ignoring case); choose another"}
            )
        if len(address) >= 6 and s["onion"].startswith(address):
            raise ValidationError({"name": f"is the start of store {s['onion']}'s address; choose another"})
