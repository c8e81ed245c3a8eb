"""What a buyer's order page and its JSON twin show, computed from an ``Order`` (no I/O here).

``order_json`` is the stable machine-readable view of ``GET /order/<token>.json``
(docs/api.md): exactly the fields the issue names. The rest are small pure
helpers for the HTML page: BTC text, the BIP21 ``bitcoin:`` URI, the QR code
(SVG made by segno on the node: no JavaScript, no external service) and
times as text.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
from dataclasses import dataclass

import segno

from ..core.errors import ValidationError
from ..payments.models import Message, Order, OrderState, Party
from ..payments.payouts import claim_height

BLOCK_MINUTES = 10
PSBT_MAGIC = b"psbt\xff"
MAX_PSBT_BYTES = 48 * 1024
# States in which the buyer may open a dispute from the order page (the service has the last word).
DISPUTABLE = frozenset({OrderState.FUNDED, OrderState.CONFIRMED, OrderState.ACCEPTED, OrderState.FULFILLED})
SENDERS = {Party.BUYER: "You", Party.VENDOR: "Vendor", Party.MODERATOR: "Moderator"}
STATE_TEXT = {
    OrderState.AWAITING_PAYMENT: "Awaiting payment",
    OrderState.FUNDED: "Paid, waiting for confirmations",
    OrderState.CONFIRMED: "Paid and confirmed: waiting for the vendor to accept",
    OrderState.ACCEPTED: "Accepted by the vendor",
    OrderState.DECLINED: "Declined by the vendor: sign the refund",
    OrderState.FULFILLED: "Fulfilled: sign the release when you have what you ordered",
    OrderState.COMPLETED: "Completed: payment released to the vendor",
    OrderState.REFUNDING: "Not accepted in time: sign the refund",
    OrderState.REFUNDED: "Refunded",
    OrderState.DISPUTED: "Disputed: the moderator is looking at it",
    OrderState.DECIDED: "Decided by the moderator",
    OrderState.RESOLVED: "Resolved: the moderator's split was paid out",
    OrderState.CLAIMED: "Claimed by the vendor after the escrow timeout",
    OrderState.EXPIRED: "Expired: not paid in time",
    OrderState.SPENT: "Spent outside Pasar: see the history",
}


def state_text(order: Order) -> str:
    """What the page says the order is waiting for; a payout already sent waits only for the chain."""
    pending = order.pending
    if pending is not None and pending.txid is not None and not order.state.final:
        return f"Payout sent ({pending.kind.value}): waiting for its first confirmation"
    return STATE_TEXT.get(order.state, order.state.value)


def btc(sat: int) -> str:
    """Satoshis as a BTC decimal with 8 places (integer arithmetic only): 12345 -> "0.00012345"."""
    sign, value = ("-" if sat < 0 else ""), abs(sat)
    return f"{sign}{value // 100_000_000}.{value % 100_000_000:08d}"


def bip21(address: str, sat: int) -> str:
    """``bitcoin:ADDRESS?amount=BTC`` (BIP21; trailing zeros dropped), or just the address for 0."""
    if sat <= 0:
        return f"bitcoin:{address}"
    amount = btc(sat).rstrip("0").rstrip(".")
    return f"bitcoin:{address}?amount={amount}"


def to_pay(order: Order) -> int:
    """What the payment request asks for now: the whole amount, or what is still missing after a part."""
    return order.missing_sat if order.funding.paid_sat else order.amount_sat


def qr_code(text: str, kind: str) -> bytes:
    """A QR code of ``text`` as ``kind`` "svg" (standalone: no styles, no scripts) or "png".

    Both: black modules on white with the 4-module quiet zone, 5 px a module. The page shows the PNG:
    Tor Browser at its "Safest" level (the one with JavaScript off) does not draw SVG images.
    """
    code = segno.make(text, error="m")
    out = io.BytesIO()
    if kind == "svg":
        code.save(out, kind="svg", scale=5, border=4, dark="#000", light="#fff", xmldecl=False, title="Payment QR code")
    else:
        code.save(out, kind="png", scale=5, border=4, dark="#000", light="#fff")
    return out.getvalue()


def when(ts: int | None) -> str:
    """A time as ``YYYY-MM-DD HH:MM UTC``; "" for None or a value no calendar shows."""
    if not ts:
        return ""
    try:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))  # a quarter of datetime's cost per entry
    except (OverflowError, OSError, ValueError):
        return ""


def days(blocks: int) -> str:
    """About how long ``blocks`` take, in words ("about 45 days")."""
    minutes = blocks * BLOCK_MINUTES
    if minutes < 48 * 60:
        return f"about {max(1, round(minutes / 60))} hours"
    return f"about {round(minutes / 1440)} days"


def fee_text(percent: int, sat: int) -> str:
    """A moderator's fee in words: "2%", "1,000 sats", "2% + 1,000 sats", "none"."""
    parts = [f"{percent}%"] if percent else []
    if sat:
        parts.append(f"{sat:,} sat" + ("" if sat == 1 else "s"))
    return " + ".join(parts) or "none"


def order_json(order: Order, pending_psbt: str | None) -> dict[str, object]:
    """``GET /order/<token>.json``: the fields buyers' tools rely on (keep them stable)."""
    pending = order.pending
    return {
        "state": order.state.value,
        "history": [{"at": h.at, "state": h.state.value, "note": h.note} for h in order.history],
        "escrow_address": order.escrow.address,
        "amount_sat": order.amount_sat,
        "paid_sat": order.funding.paid_sat,
        "descriptor": order.escrow.descriptor,
        "timeout_blocks": order.escrow.timeout_blocks,
        "refund_address": order.refund_address,
        "moderator": order.moderator.onion,
        "pending": None
        if pending is None or pending_psbt is None
        else {"action": pending.kind.value, "psbt": pending_psbt},
    }


def psbt_from_upload(data: bytes | None, text: str) -> str:
    """The base64 PSBT a buyer uploaded: a binary ``.psbt`` file, a file of base64 text, or pasted text."""
    if data:
        if len(data) > MAX_PSBT_BYTES:
            raise ValidationError({"psbt": f"that file is larger than {MAX_PSBT_BYTES // 1024} KB: not a PSBT"})
        if data.startswith(PSBT_MAGIC):
            return base64.b64encode(data).decode("ascii")
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise ValidationError({"psbt": "that file is neither a binary PSBT nor base64 text"}) from None
    cleaned = "".join(text.split())
    if not cleaned:
        raise ValidationError({"psbt": "choose the signed PSBT file or paste its base64 text"})
    try:
        raw = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(
            {"psbt": "this is not base64 text: paste the PSBT exactly as your wallet gave it"}
        ) from None
    if not raw.startswith(PSBT_MAGIC):
        raise ValidationError({"psbt": "this is not a PSBT (its base64 text starts with cHNidP8)"})
    return cleaned


@dataclass(frozen=True)
class OrderView:
    """What order.html shows beside the ``Order`` itself, as text and numbers."""

    state_text: str
    awaiting: bool  # the escrow address is still to be paid (in full or the rest)
    to_pay_sat: int
    to_pay_btc: str
    amount_btc: str
    uri: str
    surplus_sat: int  # paid over the amount: goes back to the refund address in the release
    pay_by: str
    accept_by: str
    claim_height: int | None  # from this block the vendor may take an unspent escrow alone
    history: tuple[tuple[str, str, str], ...]  # (when, state text, note)
    messages: tuple[tuple[str, str, str], ...]  # (sender, when, text)
    psbt: str | None  # the payout waiting for the buyer's signature (base64)
    disputable: bool

    @classmethod
    def of(cls, order: Order, *, psbt: str | None, messages: list[tuple[Message, str]]) -> OrderView:
        due = to_pay(order)
        return cls(
            state_text=state_text(order),
            awaiting=order.state is OrderState.AWAITING_PAYMENT,
            to_pay_sat=due,
            to_pay_btc=btc(due),
            amount_btc=btc(order.amount_sat),
            uri=bip21(order.escrow.address, due),
            surplus_sat=max(0, order.funding.paid_sat - order.amount_sat),
            pay_by=when(order.pay_by),
            accept_by=when(order.accept_by),
            claim_height=claim_height(order),
            history=tuple((when(h.at), STATE_TEXT.get(h.state, h.state.value), h.note) for h in order.history),
            messages=tuple((SENDERS.get(m.sender, m.sender.value), when(m.at), text) for m, text in messages),
            psbt=psbt if order.pending is not None else None,
            disputable=order.state in DISPUTABLE and order.dispute is None,
        )
