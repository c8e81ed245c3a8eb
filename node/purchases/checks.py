"""The buyer node's checks on what a store's node sends, before anything is paid or signed.

- ``escrow_answer``: the escrow is rebuilt here from its keys (ours must be B),
  its descriptor and address compared with the store's, the moderator's signed
  key answer checked against the moderator the buyer chose (signature only: it
  may be days old), the timeout against the store's published one, the amount
  against what this node priced. Core's agreement is checked by the service.
- ``payout``: who a payout pays: our refund address, the store's payout address
  from its escrow answer, the moderator only in a split, and a release never
  paying the vendor more than the escrow's amount. ``psbt_check.check_payout``
  then holds the PSBT to exactly these outputs.

Every failure is a ``ValidationError`` / ``SignatureError`` (a ``BadRequest``)
whose message is the reason shown with the purchase.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..core import envelope, reviews
from ..core.errors import SignatureError, ValidationError
from ..core.models import Sats
from ..payments import escrow
from ..payments import moderation_wire as mw
from ..payments.models import Escrow, KeyRef, ModeratorTerms, Party, PayoutKind, PayoutOutput
from .models import EscrowItem, PendingPayout, Purchase, PurchaseState

MIN_TIMEOUT = 144  # blocks: a day at least before the vendor alone may take the escrow
ESCROW_KEYS = frozenset({"descriptor", "address", "buyer", "vendor", "moderator", "vendor_timeout", "timeout_blocks"})


@dataclass(frozen=True)
class EscrowAnswer:
    """A store's escrow answer that passed every check but Core's."""

    escrow: Escrow
    bare_descriptor: str  # without its checksum (what Core's getdescriptorinfo is asked about)
    amount_sat: Sats
    pay_by: int
    accept_window: int | None
    vendor_address: str
    item: EscrowItem
    receipt: str  # the store's verified receipt (canonical JSON), embedded in the buyer's review
    moderator_fee_sat: Sats  # the most a split may pay the moderator (its signed key answer's terms)


def refuse(reason: str) -> ValidationError:
    return ValidationError({"escrow": reason}, reason)


def _mapping(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise refuse(f"the store's answer has no {what} object")
    return value


def _keys(f: mw.Fields) -> tuple[KeyRef, KeyRef, KeyRef, KeyRef, int]:
    keys = (f.key("buyer"), f.key("vendor"), f.key("moderator"), f.key("vendor_timeout"))
    blocks = f.number("timeout_blocks", 1, escrow.MAX_TIMEOUT)
    f.text("descriptor", limit=1000)
    f.text("address", limit=100)
    f.exact(set(ESCROW_KEYS))
    f.done()
    return (*keys, blocks)


def _check_terms(p: Purchase, buyer: KeyRef, blocks: int) -> None:
    if buyer != p.buyer_key:
        raise refuse("the escrow's buyer key is not this purchase's key: it could not be spent by you")
    if blocks < MIN_TIMEOUT:
        raise refuse(f"the escrow's timeout of {blocks} blocks is under {MIN_TIMEOUT}: the vendor could take it early")
    if p.store_timeout is not None and blocks != p.store_timeout:
        raise refuse(f"the escrow's timeout is {blocks} blocks but the store publishes {p.store_timeout}")


def receipt(p: Purchase, raw: object, *, buyer: str, address: str, now: int) -> str:
    """The store's signed receipt for this order, buyer key, escrow address and listing; its canonical JSON."""
    if raw is None:
        raise refuse("the store sent no receipt: a review of this purchase could not be proven")
    try:
        got = reviews.verify_receipt(raw, store=p.store, now=now)
    except (ValidationError, SignatureError) as exc:
        raise refuse(f"the store's receipt does not verify ({exc.message})") from exc
    wrong = [
        name
        for name, theirs, ours in (
            ("order", got.order, p.id),
            ("buyer key", got.buyer, buyer),
            ("escrow address", got.address, address),
            ("listing", got.listing_hash, p.listing_hash),
        )
        if theirs != ours
    ]
    if wrong:
        raise refuse(f"the store's receipt names another {', '.join(wrong)}")
    return got.raw.decode()


def moderator_answer(p: Purchase, raw: object, moderator_key: KeyRef, address: str) -> ModeratorTerms:
    """The moderator's signed key answer names this order, store, key and escrow address; its terms."""
    if raw is None:
        raise refuse("the store sent no moderator answer: the moderator's key cannot be checked")
    issued = raw.get("issued_at") if isinstance(raw, dict) else None
    try:  # signature only: the answer may be older than its short lifetime
        env = envelope.open_(raw, now=issued if isinstance(issued, int) else 0, expected_type=mw.KEY_TYPE)
    except (ValidationError, SignatureError) as exc:
        raise refuse(f"the moderator's answer does not verify ({exc.message})") from exc
    if env["store"] != p.moderator:
        raise refuse(f"the moderator's answer is signed by {env['store']}, not by the moderator you chose")
    reply_to = env["body"].get("reply_to")
    answer = mw.read_key_answer(env, reply_to if isinstance(reply_to, str) else "")
    if answer.order_id != p.id or answer.store != p.store:
        raise refuse("the moderator's answer is for another order or store")
    if answer.terms.pubkey.pubkey != moderator_key.pubkey:
        raise refuse("the escrow's moderator key is not the key the moderator gave for this order")
    if answer.address != address:
        raise refuse("the moderator computed another escrow address for this order")
    return answer.terms


def _item(p: Purchase, body: Mapping[str, object]) -> tuple[Sats, EscrowItem]:
    item = _mapping(body.get("item"), "item")
    f = mw.Fields(item, "item")
    listing, listing_hash = f.text("listing", limit=64), f.text("listing_hash", limit=80)
    qty, unit = f.number("qty", 1, 10**6), f.sats("unit_price_sat")
    shipping_sat, discount = f.sats("shipping_sat"), f.sats("discount_sat")
    title = f.text("title", limit=400, empty=True)
    amount = mw.Fields(body, "escrow answer").sats("amount_sat", positive=True)
    f.done()
    if (listing, listing_hash, qty) != (p.listing_id, p.listing_hash, p.qty) or (
        item.get("sku"),
        item.get("shipping"),
    ) != (p.sku, p.shipping):
        raise refuse("the store's answer names another item than the one ordered")
    if amount != unit * qty + shipping_sat - discount:
        raise refuse("the store's amount is not its own item price")
    if amount > p.amount_sat or (amount < p.amount_sat and not p.coupon):
        raise refuse(f"the store asks {amount} sat but the listing prices this order at {p.amount_sat} sat")
    return amount, EscrowItem(title, unit, shipping_sat, discount)


def escrow_answer(p: Purchase, body: Mapping[str, object], *, network: str, buyer: str, now: int) -> EscrowAnswer:
    """The store's ``escrow`` message checked (all but Core's agreement); ``ValidationError`` with the reason."""
    fields = _mapping(body.get("escrow"), "escrow")
    b, v, m, v2, blocks = _keys(mw.Fields(fields, "escrow"))
    _check_terms(p, b, blocks)
    bare = escrow.descriptor(b, v, m, v2, blocks)
    full = f"{bare}#{escrow.descriptor_checksum(bare)}"
    if fields["descriptor"] != full:
        raise refuse("the store's escrow descriptor is not the one its keys make")
    address = escrow.escrow_address(escrow.witness_script(b, v, m, v2, blocks), network)
    if fields["address"] != address:
        raise refuse(f"the store's escrow address is not {address}, the address its keys make")
    terms = moderator_answer(p, body.get("moderator_answer"), m, address)
    signed_receipt = receipt(p, body.get("receipt"), buyer=buyer, address=address, now=now)
    amount, item = _item(p, body)
    fee = terms.fee_for(amount)
    f = mw.Fields(body, "escrow answer")
    pay_by = f.number("pay_by", 0, 2**40)
    window = body.get("accept_window")
    accept = None if window is None else f.number("accept_window", 0, mw.MAX_ACCEPT_WINDOW)
    vendor_text = f.text("vendor_address", limit=100)
    f.done()
    vendor_address = escrow.parse_address(vendor_text, network, field="vendor_address")
    built = Escrow(
        buyer=b, vendor=v, moderator=m, vendor_timeout=v2, timeout_blocks=blocks, descriptor=full, address=address
    )
    return EscrowAnswer(built, bare, amount, pay_by, accept, vendor_address, item, signed_receipt, fee)


# -- payouts -----------------------------------------------------------------------------------------
def _outputs(p: Purchase, raw: object) -> tuple[PayoutOutput, ...]:
    if not isinstance(raw, list) or not raw:
        raise ValidationError({"outputs": "a payout lists its outputs"}, "the payout lists no outputs")
    outputs = []
    for entry in raw:
        f = mw.Fields(_mapping(entry, "output"), "payout output")
        address, amount = f.text("address", limit=100), f.sats("amount_sat", positive=True)
        role = f.text("role", limit=20)
        f.done()
        if role not in {r.value for r in Party}:
            raise ValidationError({"role": "unknown role"}, f"a payout output has the unknown role {role!r}")
        outputs.append(PayoutOutput(address, amount, Party(role)))
    return tuple(outputs)


def _check_roles(p: Purchase, kind: PayoutKind, outputs: tuple[PayoutOutput, ...]) -> None:
    for out in outputs:
        if out.role is Party.BUYER and out.address != p.refund_address:
            raise refuse(f"the {kind.value} pays the buyer's share to {out.address}, not to your refund address")
        if out.role is Party.VENDOR and out.address != p.vendor_address:
            raise refuse(f"the {kind.value} pays the vendor's share to {out.address}, not to its escrow-time address")
        if out.role is Party.VENDOR and kind is PayoutKind.REFUND:
            raise refuse("a refund pays the vendor nothing")
        if out.role is Party.MODERATOR and kind is not PayoutKind.SPLIT:
            raise refuse(f"a {kind.value} pays the moderator nothing")
    vendor = sum(o.amount_sat for o in outputs if o.role is Party.VENDOR)
    if kind is PayoutKind.RELEASE and vendor > (p.escrow_amount_sat or 0):
        raise refuse(f"the release pays the vendor {vendor} sat, more than the order's {p.escrow_amount_sat} sat")
    if kind is PayoutKind.SPLIT:
        _check_split(p, outputs)


def _check_split(p: Purchase, outputs: tuple[PayoutOutput, ...]) -> None:
    """A split pays the moderator at most its signed fee, once; buyer + vendor within the escrow."""
    fees = [o.amount_sat for o in outputs if o.role is Party.MODERATOR]
    if len(fees) > 1:
        raise refuse("the split pays the moderator more than once")
    if fees and fees[0] > p.moderator_fee_sat:
        raise refuse(
            f"the split pays the moderator {fees[0]} sat, more than its agreed fee of {p.moderator_fee_sat} sat"
        )
    held = max(sum(f[2] for f in p.funding), p.escrow_amount_sat or 0)
    shares = sum(o.amount_sat for o in outputs if o.role is not Party.MODERATOR)
    if shares > held:
        raise refuse(f"the split pays the buyer and the vendor {shares} sat, more than the escrow's {held} sat")


DISPUTE_STATES = frozenset({PurchaseState.DISPUTED.value, PurchaseState.DECIDED.value})


def in_dispute(p: Purchase) -> bool:
    """The buyer opened a dispute, or the store reported the order disputed or decided."""
    return p.disputed or p.state in DISPUTE_STATES or any(e.state in DISPUTE_STATES for e in p.history)


def split_waits(p: Purchase) -> str:
    """Why a split is not signed yet ("" when it may be): only a moderator's decision in a dispute is."""
    if not in_dispute(p):
        return "a split is signed only in a dispute: it waits until you or the store open one"
    return ""


def payout(p: Purchase, body: Mapping[str, object], *, now: int) -> PendingPayout:
    """The store's ``payout`` message checked for its roles and amounts (``check_payout`` does the PSBT)."""
    data = _mapping(body.get("payout"), "payout")
    f = mw.Fields(data, "payout")
    kind_text, psbt, fee = f.text("kind", limit=20), f.text("psbt", limit=mw.MAX_BYTES), f.sats("fee_sat")
    f.done()
    if kind_text not in {PayoutKind.RELEASE.value, PayoutKind.REFUND.value, PayoutKind.SPLIT.value}:
        raise refuse(f"a buyer signs releases, refunds and splits, not a {kind_text!r}")
    kind = PayoutKind(kind_text)
    outputs = _outputs(p, data.get("outputs"))
    _check_roles(p, kind, outputs)
    return PendingPayout(kind=kind, psbt=psbt, outputs=outputs, fee_sat=fee, received_at=now)
