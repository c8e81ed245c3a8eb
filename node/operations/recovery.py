"""The recovery sheet kept in every backup (``recovery.json``): what plain Bitcoin Core needs to spend an escrow.

One entry per escrow this node is a party to and that may still hold coins:
the vendor's orders (open, or expired with a payment), the buyer's purchases
(the same), and every moderation case not decided yet (all of them, however many). Each names the role, the descriptor
with its checksum, the address, the funding outpoints (and their heights), the
timeout N, every key with its origin (``[fingerprint/path]``: which wallet
signs), which of them are this node's, and the payout PSBTs in flight with the
signatures they carry. No private key: those stay in Bitcoin Core's wallet,
named here (``wallet``) for ``bitcoin-cli -rpcwallet=``. docs/recovery.md gives
the ``bitcoin-cli`` commands that spend an escrow from this sheet alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from ..core.errors import PasarError
from ..payments.models import Escrow, Order, OrderState, Payout, PayoutOutput
from ..payments.moderation_store import Case, CaseState
from ..payments.payouts import claim_height
from ..purchases.models import Purchase, PurchaseState
from .base import Context

log = logging.getLogger(__name__)
FORMAT, VERSION = "pasar-recovery", 1
PAGE = 200
HELP = (
    "docs/recovery.md: spend an escrow with plain Bitcoin Core (bitcoin-cli scantxoutset / createpsbt / "
    "utxoupdatepsbt / walletprocesspsbt / combinepsbt / finalizepsbt / sendrawtransaction)"
)
MINE = {"vendor": ["vendor", "vendor_timeout"], "buyer": ["buyer"], "moderator": ["moderator"]}
T = TypeVar("T")


@runtime_checkable
class _WalletNames(Protocol):
    async def wallet_names(self) -> tuple[str, str]: ...


@dataclass(frozen=True)
class SheetOutput:
    address: str
    amount_sat: int
    role: str


@dataclass(frozen=True)
class SheetPayout:
    kind: str  # release | refund | split | claim
    state: str  # "pending" (gathering signatures) | "broadcast"
    psbt: str  # base64, with every signature it carries
    signed_by: list[str]
    txid: str | None
    outputs: list[SheetOutput]
    fee_sat: int


@dataclass(frozen=True)
class SheetOutpoint:
    txid: str
    vout: int
    amount_sat: int
    height: int | None  # the block it confirmed in; None: unconfirmed or not known to this party


@dataclass(frozen=True)
class SheetEscrow:
    role: str  # this node's party: vendor | buyer | moderator
    order_id: str
    store: str
    state: str
    created_at: int
    amount_sat: int
    descriptor: str  # wsh(or_d(multi(2,B,V,M),and_v(v:pk(V2),older(N))))#checksum
    address: str
    timeout_blocks: int  # N
    keys: dict[str, str]  # buyer / vendor / moderator / vendor_timeout -> "[fingerprint/path]pubkey"
    mine: list[str]  # which of ``keys`` this node's wallet holds
    funding: list[SheetOutpoint]
    claim_height: int | None  # the first block a vendor's timeout claim can be mined in (when known)
    refund_address: str
    vendor_address: str
    payouts: list[SheetPayout] = field(default_factory=list)


@dataclass(frozen=True)
class Sheet:
    format: str
    version: int
    created_at: int
    node: str  # the node's onion
    network: str  # bitcoin_network
    wallet: str  # bitcoin-cli -rpcwallet= of the signing wallet ("" when Core did not answer: see docs)
    watch_wallet: str
    escrows: list[SheetEscrow]
    missing: list[str]  # parts that could not be read (their escrows are not in this sheet)
    help: str = HELP


def _keys(e: Escrow) -> dict[str, str]:
    parts = {"buyer": e.buyer, "vendor": e.vendor, "moderator": e.moderator, "vendor_timeout": e.vendor_timeout}
    return {name: key.descriptor_key() for name, key in parts.items()}


def _outputs(outputs: tuple[PayoutOutput, ...]) -> list[SheetOutput]:
    return [SheetOutput(o.address, o.amount_sat, o.role.value) for o in outputs]


def _payout(p: Payout, state: str) -> SheetPayout:
    return SheetPayout(
        p.kind.value, state, p.psbt, [s.value for s in p.signed_by], p.txid, _outputs(p.outputs), p.fee_sat
    )


def _base(role: str, order_id: str, store: str, state: str, created_at: int, amount: int, e: Escrow) -> SheetEscrow:
    return SheetEscrow(
        role=role,
        order_id=order_id,
        store=store,
        state=state,
        created_at=created_at,
        amount_sat=amount,
        descriptor=e.descriptor,
        address=e.address,
        timeout_blocks=e.timeout_blocks,
        keys=_keys(e),
        mine=MINE[role],
        funding=[],
        claim_height=None,
        refund_address="",
        vendor_address="",
    )


def _order_funding(order: Order) -> list[SheetOutpoint]:
    heights = {(txid, vout): h for txid, vout, h in order.funding.heights}
    return [SheetOutpoint(t, v, a, heights.get((t, v))) for t, v, a in order.funding.outpoints]


def order_entry(order: Order, role: str = "vendor") -> SheetEscrow:
    """A vendor's order (or, with ``role``, the order record a moderator holds for a dispute)."""
    payouts = [_payout(p, "broadcast") for p in order.payouts]
    if order.pending is not None:
        payouts.append(_payout(order.pending, "broadcast" if order.pending.txid else "pending"))
    entry = _base(role, order.id, order.store, order.state.value, order.created_at, order.amount_sat, order.escrow)
    return dataclasses.replace(
        entry,
        funding=_order_funding(order),
        claim_height=claim_height(order),
        refund_address=order.refund_address,
        vendor_address=order.vendor_address,
        payouts=payouts,
    )


def purchase_entry(p: Purchase, escrow: Escrow) -> SheetEscrow:
    entry = _base("buyer", p.id, p.store, p.state, p.created_at, p.escrow_amount_sat or p.amount_sat, escrow)
    payouts: list[SheetPayout] = []
    if p.pending is not None:
        signed = ["buyer"] if p.pending.signed else []  # besides the store's or moderator's signature it came with
        pending = p.pending
        state = "broadcast" if pending.txid else "pending"
        payouts.append(
            SheetPayout(
                pending.kind.value,
                state,
                pending.psbt,
                signed,
                pending.txid,
                _outputs(pending.outputs),
                pending.fee_sat,
            )
        )
    funding = [SheetOutpoint(t, v, a, None) for t, v, a in p.funding]
    return dataclasses.replace(
        entry, funding=funding, refund_address=p.refund_address, vendor_address=p.vendor_address, payouts=payouts
    )


def case_entry(case: Case) -> SheetEscrow:
    if case.order is not None:  # the vendor's order record came with the dispute: its funding and payouts
        entry = dataclasses.replace(order_entry(case.order, "moderator"), state=case.state.value)
    else:
        entry = _base(
            "moderator", case.order_id, case.store, case.state.value, case.created_at, case.amount_sat, case.escrow
        )
        entry = dataclasses.replace(entry, refund_address=case.refund_address)
    if case.psbt is not None:
        kind = "refund" if case.state is CaseState.REFUND_SIGNED else "split"
        mine = SheetPayout(kind, "pending", case.psbt, ["moderator"], None, [], 0)
        entry = dataclasses.replace(entry, payouts=[*entry.payouts, mine])
    return entry


async def _pages(read: Callable[[int], Awaitable[list[T]]]) -> list[T]:
    found: list[T] = []
    while page := await read(len(found)):
        found += page
    return found


async def vendor_escrows(ctx: Context) -> list[SheetEscrow]:
    store = ctx.payments.store
    expired = await _pages(lambda at: store.list(state=OrderState.EXPIRED.value, limit=PAGE, offset=at))
    orders = [*await store.open_orders(), *(o for o in expired if o.funding.paid_sat > 0)]
    return [order_entry(o) for o in orders]


async def buyer_escrows(ctx: Context) -> list[SheetEscrow]:
    purchases = await _pages(lambda at: ctx.purchases.list(limit=PAGE, offset=at))
    kept = [p for p in purchases if not p.final or (p.state == PurchaseState.EXPIRED.value and p.funding)]
    return [purchase_entry(p, p.escrow) for p in kept if p.escrow is not None]


async def moderator_escrows(ctx: Context) -> list[SheetEscrow]:
    return [case_entry(c) for c in await ctx.moderation.active_cases()]  # every case not decided, no cap


def _open(read: Callable[[], T], default: T) -> T:
    """``read()``, or ``default`` when that part of the node is not open in this context."""
    try:
        return read()
    except (KeyError, RuntimeError):
        return default


async def _wallets(ctx: Context) -> tuple[str, str]:
    bitcoin = _open(lambda: ctx.payments.ctx.bitcoin, None)
    if not isinstance(bitcoin, _WalletNames):
        return "", ""
    try:
        return await bitcoin.wallet_names()
    except PasarError as exc:
        log.warning("the recovery sheet names no wallet: %s", exc.message)
        return "", ""


async def build_sheet(ctx: Context) -> Sheet:
    escrows: list[SheetEscrow] = []
    missing: list[str] = []
    parts = {"vendor orders": vendor_escrows, "purchases": buyer_escrows, "moderation cases": moderator_escrows}
    for name, read in parts.items():
        try:
            escrows += await read(ctx)
        except (KeyError, RuntimeError) as exc:  # that part is not open in this context (e.g. a CLI command)
            missing.append(f"{name}: not open ({exc})")
    wallet, watch = await _wallets(ctx)
    return Sheet(
        format=FORMAT,
        version=VERSION,
        created_at=int(time.time()),
        node=_open(lambda: ctx.moderation.onion, ""),
        network=_open(lambda: ctx.payments.settings.network, ""),
        wallet=wallet,
        watch_wallet=watch,
        escrows=escrows,
        missing=missing,
    )


async def recovery_sheet(ctx: Context) -> bytes:
    """JSON bytes: every escrow this node is a party to, with what plain Bitcoin Core needs to spend it."""
    sheet = await build_sheet(ctx)
    return (json.dumps(dataclasses.asdict(sheet), indent=1, sort_keys=True) + "\n").encode()
