"""Ports: the Protocols domain code depends on, one per adapter.

Features receive adapters typed by these Protocols, never the concrete
classes, so unit tests pass small fakes without ``# type: ignore``. Each
adapter in ``node/adapters`` satisfies its Protocol (checked by mypy where
the app passes it in).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .models import HttpReply, Listing, OnionOptions, OnionSpec, Profile, StoreRecord

# -- storage of stores (node/adapters/store.py) --------------------------------
ChoosePort = Callable[[set[int]], int | None]
"""Given the ports other stores hold, the port to save (None = a free port at each start)."""
NextSeq = Callable[[int], int]
"""The market's catalog ``seq`` rule: the store's current seq -> the seq its write gets."""


@dataclass(frozen=True)
class Put:
    """What ``put_listings`` did: the store's ``seq`` after it and the ids it skipped (import key already stored)."""

    seq: int
    skipped: list[str]


class Storage(Protocol):
    """Store records, listings, keys and images; every call is one atomic job.

    A write that changes the catalog takes ``next_seq`` (the market's rule)
    and stores the seq it returns in the same write as the data, so no two
    catalog contents ever share a seq, also across a crash.
    """

    async def list_stores(self) -> list[StoreRecord]: ...
    async def get_store(self, onion: str) -> StoreRecord: ...
    async def create_store(
        self, onion: str, seed: bytes, profile: Profile, choose_port: ChoosePort, *, now: int
    ) -> StoreRecord: ...
    async def read_key(self, onion: str) -> bytes: ...
    async def set_port(self, onion: str, choose_port: ChoosePort) -> StoreRecord: ...
    async def set_onion_service(self, onion: str, options: OnionOptions) -> None: ...
    async def update_profile(self, onion: str, profile: Profile, next_seq: NextSeq) -> int: ...
    async def delete_store(self, onion: str) -> Path: ...
    async def seal_data(self, onion: str, next_seq: NextSeq) -> tuple[StoreRecord, list[Listing]]: ...
    async def listings(self, onion: str) -> list[Listing]: ...
    async def put_listings(self, onion: str, listings: Sequence[Listing], next_seq: NextSeq) -> Put: ...
    async def replace_listing(self, onion: str, listing: Listing, next_seq: NextSeq) -> int: ...
    async def delete_listing(self, onion: str, listing_id: str, next_seq: NextSeq) -> int: ...
    def image_path(self, onion: str, name: str) -> Path: ...
    async def missing_images(self, onion: str, names: set[str]) -> set[str]: ...
    async def put_image(self, onion: str, name: str, data: bytes) -> None: ...


# -- tor's control port (node/adapters/tor.py) ---------------------------------


class Tor(Protocol):
    """What the onion publisher and the app use of tor; every failure is a ``TorError``."""

    @property
    def embedded(self) -> bool:
        """True when the node launched this tor itself (it then runs as this user)."""

    @property
    def version(self) -> str: ...
    @property
    def supports_pow(self) -> bool: ...
    @property
    def socks(self) -> tuple[str, int] | None:
        """tor's loopback SocksPort, known once connected; None when it has none."""

    async def start(
        self,
        *,
        on_lost: Callable[[], None],
        on_descriptor: Callable[[str, str, str], None],
        on_bootstrap: Callable[[int, str], None],
    ) -> None:
        """Launch or reach tor; callbacks run on the event loop (``on_descriptor(action, onion, reason)``)."""

    async def stop(self) -> None: ...
    async def add_onion(self, spec: OnionSpec) -> str:
        """Publish ``spec``; returns the onion name tor computed from its key."""

    async def remove_onion(self, name: str) -> None: ...
    async def close(self) -> None:
        """Stop, and release the adapter for good (app shutdown)."""


# -- outbound HTTP through tor (node/adapters/net.py) --------------------------
class Http(Protocol):
    """GET another node's onion, retrying transient tor failures within bounds."""

    async def get(
        self,
        url: str,
        *,
        deadline: float = ...,
        attempts: int = ...,
        allow_redirects: bool = ...,
        before_retry: Callable[[], object] | None = ...,
        headers: Mapping[str, str] | None = ...,
        max_bytes: int = ...,
    ) -> HttpReply:
        """The whole response; ``Unreachable`` (a ``PasarError``) after ``attempts`` or ``deadline`` seconds.

        A body longer than ``max_bytes`` is ``Unreachable`` too (it is not read past the limit).
        """

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        deadline: float = ...,
        attempts: int = ...,
        content_type: str = ...,
        max_bytes: int = ...,
        fresh_circuit: bool = ...,
    ) -> HttpReply:
        """POST ``body`` (idempotent messages only: it may be sent again after a transient failure).

        ``fresh_circuit``: over a circuit used for nothing else (a SOCKS identity of its own, once).
        """

    async def close(self) -> None: ...


# -- SQLite for write-heavy data (node/adapters/sqlite.py) ----------------------

SqlParams = Sequence[object] | Mapping[str, object]
_Result = TypeVar("_Result")


class SqlRow(Protocol):
    """A result row: by column name or position (``sqlite3.Row``); values are raw until checked."""

    def __getitem__(self, key: int | str, /) -> Any: ...
    def __len__(self) -> int: ...
    def keys(self) -> list[str]: ...


class SqlCursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    @property
    def lastrowid(self) -> int | None: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class SqlConnection(Protocol):
    """What a read or write function may do with its connection (``sqlite3.Connection``)."""

    def execute(self, sql: str, parameters: SqlParams = ..., /) -> SqlCursor: ...
    def executemany(self, sql: str, parameters: Iterable[SqlParams], /) -> SqlCursor: ...


class Database(Protocol):
    """A SQLite database: writes serialised on one thread, reads from a pool; never blocks the loop.

    A write function runs in one transaction (committed when it returns,
    rolled back when it raises) with no other write in between, so it may
    read, decide and write. It must not commit itself. Failures are
    ``StorageError``s whose message tells the operator what to do.
    """

    async def execute_write_fn(self, fn: Callable[[SqlConnection], _Result]) -> _Result: ...
    async def execute_fn(self, fn: Callable[[SqlConnection], _Result]) -> _Result:
        """``fn`` on a read-only connection; all its statements see one snapshot."""

    async def execute(self, sql: str, params: SqlParams = ...) -> Sequence[SqlRow]: ...


# -- full-text index of one catalog snapshot (node/adapters/textindex.py) -------
@dataclass(frozen=True)
class TextDoc:
    """One listing as the index sees it: its searchable text and its category (exact name, "" for none)."""

    text: str
    category: str


@dataclass(frozen=True)
class TextHits:
    """One page of matches: positions in the indexed order (0 = first document), and how many match in all."""

    positions: list[int]
    total: int


class TextIndex(Protocol):
    """A read-only full-text index of one snapshot's listings, built once, then queried.

    ``words`` are the user's words, casefolded, as they came: any text (quotes,
    ``*``, ``NEAR(``, ``-``, ``AND``) is a word to look for, never query
    syntax, and never raises. Every word must match; ``category`` (an exact
    name) narrows the matches; they come in document order (the snapshot's
    newest-first order), ``limit`` of them from ``offset``, with the total.
    """

    def search(self, words: Sequence[str], *, category: str | None, offset: int, limit: int) -> TextHits:
        """Blocks: for threads and tests. Safe to call from several threads at once."""

    async def find(self, words: Sequence[str], *, category: str | None, offset: int, limit: int) -> TextHits:
        """``search`` run off the event loop (what the storefront awaits)."""


TextIndexFactory = Callable[[Sequence[TextDoc]], TextIndex]
"""Builds the index of ``docs`` (document ``i`` at position ``i``); called once per snapshot, off the loop."""
