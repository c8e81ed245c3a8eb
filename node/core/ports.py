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

from .models import HttpReply, Listing, OnionOptions, OnionSpec, Profile, StoredReview, StoreRecord

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
    async def listing(self, onion: str, listing_id: str) -> Listing | None:
        """One listing, or None when the store has none with that id."""

    async def put_listings(self, onion: str, listings: Sequence[Listing], next_seq: NextSeq) -> Put: ...
    async def replace_listing(self, onion: str, listing: Listing, next_seq: NextSeq) -> int: ...
    async def delete_listing(self, onion: str, listing_id: str, next_seq: NextSeq) -> int: ...
    def image_path(self, onion: str, name: str) -> Path: ...
    async def missing_images(self, onion: str, names: set[str]) -> set[str]: ...
    async def put_image(self, onion: str, name: str, data: bytes) -> None: ...
    async def reviews(self, onion: str) -> list[StoredReview]:
        """The buyers' reviews the store holds (none for stores made before reviews existed)."""

    async def update_reviews(
        self, onion: str, change: Callable[[list[StoredReview]], list[StoredReview] | None], next_seq: NextSeq
    ) -> bool:
        """Replace the reviews with ``change(current)`` and take a new seq, in one job; None: nothing written."""


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
        isolation: str = ...,
    ) -> HttpReply:
        """POST ``body`` (idempotent messages only: it may be sent again after a transient failure).

        ``fresh_circuit``: over a circuit used for nothing else (a SOCKS identity of its own, once).
        ``isolation``: over circuits kept for this name (and store) only, e.g. one purchase's, so the store
        cannot link two purchases of one buyer node by their circuits.
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


# -- the operator's Bitcoin Core over JSON-RPC (node/adapters/bitcoin.py) --------
# Amounts are integer satoshis here; BTC decimals exist only inside the adapter.
@dataclass(frozen=True)
class WalletKey:
    """A fresh key of the signing wallet: compressed pubkey hex and its origin ``[fingerprint/path]`` ("" if none)."""

    pubkey: str  # 66 hex characters
    origin: str  # e.g. "[d34db33f/84h/1h/0h/0/7]"; "" when the wallet gives none
    address: str  # the bech32 address the key came with (kept for the record)


@dataclass(frozen=True)
class Utxo:
    """An unspent output the watch-only wallet sees (mempool included)."""

    txid: str
    vout: int
    amount_sat: int
    confirmations: int  # 0 = in the mempool
    address: str


@dataclass(frozen=True)
class PsbtInput:
    """One input of a decoded PSBT, as far as the checks before signing need it."""

    txid: str
    vout: int
    sequence: int
    utxo_amount_sat: int | None  # witness_utxo amount; None when the PSBT carries no witness_utxo
    utxo_script_hex: str | None  # witness_utxo scriptPubKey hex
    witness_script_hex: str | None
    sighash: str | None  # e.g. "ALL"; None = not set (ALL is used)
    bip32_pubkeys: tuple[str, ...]  # pubkeys named in bip32_derivs
    partial_sig_pubkeys: tuple[str, ...]  # pubkeys that have signed this input
    final: bool  # final_scriptwitness present


@dataclass(frozen=True)
class PsbtOutput:
    address: str | None  # None for a script without an address (refused by the checks)
    script_hex: str
    amount_sat: int


@dataclass(frozen=True)
class DecodedPsbt:
    version: int  # the unsigned transaction's nVersion
    locktime: int
    inputs: tuple[PsbtInput, ...]
    outputs: tuple[PsbtOutput, ...]
    fee_sat: int | None  # None when an input's amount is unknown
    vsize: int  # of the unsigned transaction (witness not counted)


@dataclass(frozen=True)
class Finalized:
    complete: bool
    hex: str | None  # the network-serialised transaction when complete


class Bitcoin(Protocol):
    """The operator's Bitcoin Core: a signing wallet (``bitcoin_wallet``) and a watch-only wallet per node.

    Every failure is a ``WalletError`` (Core unreachable, wrong auth, RPC error) whose message says
    what to do; it is never retried here (callers poll again later).
    """

    async def chain(self) -> str:
        """``getblockchaininfo`` ``chain``: "main" | "test" | "testnet4" | "signet" | "regtest"."""

    async def height(self) -> int: ...
    async def new_key(self) -> WalletKey:
        """``getnewaddress "" bech32`` + ``getaddressinfo`` in the signing wallet."""

    async def checksum(self, descriptor: str) -> str:
        """``getdescriptorinfo``'s checksum (8 characters) of ``descriptor`` (given without one)."""

    async def derive_address(self, descriptor: str) -> str:
        """``deriveaddresses`` of a descriptor with its checksum (exactly one address)."""

    async def watch(self, descriptor: str, since: int | None = None) -> None:
        """Import ``descriptor`` (with checksum) into the watch-only wallet (created/loaded on first use),
        timestamp "now", or ``since`` (unix time: Core rescans the blocks from then). Idempotent."""

    async def rewatch(self, escrows: Sequence[tuple[str, int]]) -> list[str]:
        """Import into the watch-only wallet each ``(descriptor, since)`` it does not hold yet (``listdescriptors``),
        all in one ``importdescriptors`` rescanning from the earliest ``since``; the descriptors imported (one Core
        refuses is logged and left out). ``WalletError`` when Core does not answer."""

    async def rescan_progress(self) -> float | None:
        """None once the watch-only wallet is not rescanning (and any ``watch`` deferred meanwhile is imported);
        else the fraction of the rescan done (``getwalletinfo`` "scanning"). While a ``rewatch`` rescans, ``watch``
        returns at once and its import is made when the rescan is over. ``WalletError`` when Core does not answer."""

    async def unspent(self, addresses: Sequence[str]) -> list[Utxo]:
        """``listunspent 0 9999999 [addresses]`` in the watch-only wallet (mempool included)."""

    async def fee_rate(self) -> int:
        """sat/vB for a payout: ``estimatesmartfee`` or the configured fallback, never below ``mempoolminfee``."""

    async def create_psbt(
        self, inputs: Sequence[tuple[str, int, int]], outputs: Sequence[tuple[str, int]], descriptor: str
    ) -> str:
        """An unsigned PSBT (base64), tx version 2, locktime 0: inputs ``(txid, vout, sequence)``, outputs
        ``(address, sat)`` in that order; ``utxoupdatepsbt`` with ``descriptor`` fills witness_utxo,
        witness_script and bip32_derivs."""

    async def decode_psbt(self, psbt: str) -> DecodedPsbt:
        """``decodepsbt``; a PSBT Core cannot parse is a ``ValidationError`` naming the problem."""

    async def sign(self, psbt: str) -> str:
        """``walletprocesspsbt psbt true "ALL" true false`` in the signing wallet; the PSBT it returns."""

    async def combine(self, psbts: Sequence[str]) -> str: ...
    async def finalize(self, psbt: str) -> Finalized: ...
    async def test_accept(self, tx_hex: str) -> str | None:
        """``testmempoolaccept``: None when accepted, else Core's reject reason (e.g. "non-BIP68-final")."""

    async def broadcast(self, tx_hex: str) -> str:
        """``sendrawtransaction``; the txid."""

    async def tx_confirmations(self, txid: str) -> int | None:
        """Confirmations of a transaction the watch-only wallet knows (0 = mempool), None if unknown."""

    async def send(self, address: str, amount_sat: int) -> str:
        """``sendtoaddress address amount`` from the signing wallet (the fee on top, not subtracted); the txid.

        A buyer's node funds an escrow with it, only after its own checks and the buyer's confirmation."""

    async def tx_block(self, txid: str) -> str | None:
        """The hash of the block holding a transaction the watch-only or signing wallet knows; None while it is
        unconfirmed, unknown, or lost to a conflicting one."""

    async def output_at(self, txid: str, vout: int, block: str) -> tuple[str, int] | None:
        """``getrawtransaction txid true block``: output ``vout``'s address and sats; None when that block has no
        such transaction or output, or is not in the active chain; ``Unavailable`` when Core does not know the
        block (yet): nothing can be decided."""

    async def fund(self, address: str, amount_sat: int) -> tuple[str, str]:
        """A payment of exactly ``amount_sat`` to ``address`` from the signing wallet (the fee on top), built,
        signed and finalized but NOT broadcast (its coins locked): ``(txid, raw hex)``. The caller stores both,
        then ``broadcast``s the hex (again after a crash: same txid, never a second payment)."""
