"""Pure rules of the moderator's cases: when a refund may be signed, what a case answers, which records agree.

The refund window is timed by this node, never by the requester
(docs/protocol.md, "Moderation"): a refund is signed no earlier than

    max(funded_at + max(MIN_REFUND_WAIT, accept_window), accept_by)

where ``funded_at`` is when this node's own watch-only wallet first saw the
escrow funded (``ModeratorService.watch_once`` or the refund request itself
records it), ``accept_window`` what the vendor declared at key-request time
(seconds it has to accept a paid order; absent: 0), and ``accept_by`` what the
refund request names (it can only make the wait longer).
"""

from __future__ import annotations

from datetime import UTC, datetime

from ..core.errors import Conflict, ValidationError
from . import codec
from .models import Order
from .moderation_store import Case, CaseState
from .moderation_wire import CaseAnswer, KeyRequest

MIN_REFUND_WAIT = 3600  # seconds: a refund is never signed sooner after this node first saw the escrow funded


def when(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def refund_opens_at(case: Case, accept_by: int) -> int | None:
    """When this node may sign the refund of ``case``; None while its wallet has not seen the escrow funded."""
    if case.funded_at is None:
        return None
    return max(case.funded_at + max(MIN_REFUND_WAIT, case.accept_window or 0), accept_by)


def check_refund_window(case: Case, accept_by: int, now: int) -> None:
    """``Conflict`` until the refund window of ``case`` (module docstring) has passed at ``now``."""
    if now < accept_by:
        raise Conflict(f"the vendor may still accept order {case.order_id} until {accept_by} (unix time)")
    opens = refund_opens_at(case, accept_by)
    if opens is None:
        raise Conflict(
            f"this moderator's wallet has not seen the escrow of order {case.order_id} funded yet: "
            f"a refund is signed {MIN_REFUND_WAIT} seconds after it does; ask again later"
        )
    if now < opens:
        raise Conflict(
            f"this moderator signs the refund of order {case.order_id} from {when(opens)} ({opens} unix time): "
            f"its wallet first saw the escrow funded at {when(case.funded_at or 0)}; ask again then"
        )


def check_not_refunding(case: Case) -> None:
    """``Conflict`` when this node already signed the refund of ``case``: a dispute or decision would be moot."""
    if case.state is CaseState.REFUND_SIGNED:
        signed = case.refund_signed_at or case.updated_at
        raise Conflict(
            f"this order is being refunded; the refund signed at {when(signed)} pays the buyer "
            f"(order {case.order_id}): there is nothing left to dispute or decide"
        )


def same_request(case: Case, req: KeyRequest) -> bool:
    e = case.escrow
    same_keys = (e.buyer, e.vendor, e.vendor_timeout) == (req.buyer, req.vendor, req.vendor_timeout)
    return same_keys and e.timeout_blocks == req.timeout_blocks and case.amount_sat == req.amount_sat


def order_record(case: Case, raw: object) -> Order:
    """The vendor's order record, which must agree with what this node holds for the case."""
    order = codec.from_plain(Order, raw, "order")
    if order.id != case.order_id or order.store != case.store:
        raise ValidationError({"order": "the record is of another order"})
    if order.escrow != case.escrow or order.amount_sat != case.amount_sat:
        raise ValidationError({"order": "the record's escrow or amount differs from the key request"})
    if order.refund_address != case.refund_address:
        raise ValidationError({"order": "the record's refund address differs from the key request"})
    return order


def answer(case: Case, kind: str) -> CaseAnswer:
    decided = case.state is CaseState.DECIDED
    psbt = case.psbt if case.state in (CaseState.REFUND_SIGNED, CaseState.DECIDED) else None
    return CaseAnswer(
        order_id=case.order_id,
        kind=kind,
        state=case.state.value,
        psbt=psbt,
        buyer_sat=case.buyer_sat if decided else None,
        vendor_sat=case.vendor_sat if decided else None,
        moderator_sat=case.moderator_sat if decided else None,
        note=case.note,
        fee_rate=case.fee_rate if decided else None,
        moderator_address=case.moderator_address if decided else None,
    )
