"""What the purchase service's parts share: the store, the mailbox, Core, the settings and the clock."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core import ports
from ..core.errors import Unavailable
from ..payments.settings import PaymentSettings
from . import sending, signing
from .models import Event, Purchase
from .sending import Outbox
from .store import PurchaseStore

log = logging.getLogger(__name__)


def _nothing() -> None:
    return None


@dataclass
class Ctx:
    store: PurchaseStore
    outbox: Outbox
    bitcoin: ports.Bitcoin | None
    settings: PaymentSettings
    clock: Callable[[], int]
    wake: Callable[[], None] = field(default=_nothing)

    def wallet(self) -> ports.Bitcoin:
        if self.bitcoin is None:
            raise Unavailable(
                "buying needs this node's Bitcoin Core (its wallet gives the escrow keys and pays): "
                "set bitcoin_rpc_url and bitcoin_wallet, then restart"
            )
        return self.bitcoin


MAX_HISTORY = 200  # history lines kept per purchase (a store cannot grow the record without end)
MAX_NOTES = 200  # the store's messages kept per purchase
HISTORY_FULL = f"more than {MAX_HISTORY} history lines: later ones are not kept (the state still updates)"


def event(p: Purchase, note: str, *, now: int, state: str | None = None) -> Purchase:
    """``p`` with a history line (and a new state when given); past ``MAX_HISTORY`` lines, one note, then none."""
    new_state = p.state if state is None else state
    if len(p.history) > MAX_HISTORY:
        return dataclasses.replace(p, state=new_state, updated_at=now)
    line = Event(at=now, state=new_state, note=note if len(p.history) < MAX_HISTORY else HISTORY_FULL)
    return dataclasses.replace(p, state=new_state, updated_at=now, history=(*p.history, line))


async def sign_pending(ctx: Ctx, p: Purchase) -> Purchase:
    """Check and sign the pending payout, send it to the store (and broadcast it when complete)."""
    pending = p.pending
    if pending is None or pending.signed:
        return p
    signed = await signing.sign(ctx.wallet(), p, max_fee_rate=ctx.settings.max_fee_rate)
    what = "psbt:" + hashlib.sha256(pending.psbt.encode()).hexdigest()[:16]
    fields = {"payout": pending.kind.value, "psbt": signed.psbt}
    await sending.send(ctx.outbox, p, "psbt", fields, message_id=sending.message_id(p.id, what))
    ctx.wake()
    said = f"you signed the {pending.kind.value}" + (f"; broadcast as {signed.txid}" if signed.txid else "")

    def change(current: Purchase) -> Purchase:
        if current.pending is None or current.pending.psbt != pending.psbt or current.pending.signed:
            return current  # another payout arrived meanwhile, or this one was signed by a concurrent call
        done = dataclasses.replace(current.pending, psbt=signed.psbt, signed=True, txid=signed.txid, waiting="")
        return event(dataclasses.replace(current, pending=done), said, now=ctx.clock())

    return await ctx.store.update(p.id, change)
