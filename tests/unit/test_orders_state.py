"""The order state machine: allowed moves, refusals with a readable reason, history, pure helpers."""

import pytest

from node.core.errors import Conflict
from node.core.models import Sats
from node.payments import orders
from node.payments.models import FINAL_STATES, Funding, Message, OrderState, Party, Payout, PayoutKind
from tests.unit.order_helpers import T0, moved, order

S = OrderState


def walk(o, *states, start=T0 + 1):
    for n, state in enumerate(states):
        o = orders.transition(o, state, now=start + n, note=f"to {state.value}")
    return o


def test_every_state_has_its_rules_and_verb():
    assert set(orders.ALLOWED) == set(OrderState)
    assert set(orders.VERBS) == set(OrderState)
    for state, nexts in orders.ALLOWED.items():
        assert state not in nexts, f"{state} may not move to itself"


def test_final_states_go_nowhere_except_a_late_payment_refund():
    for state in FINAL_STATES - {S.EXPIRED}:
        assert orders.ALLOWED[state] == set()
    assert orders.ALLOWED[S.EXPIRED] == {S.DECLINED, S.SPENT}


def test_no_dispute_once_the_moderator_signed_a_refund():
    """Review finding 7: the buyer holds a moderator-signed refund in REFUNDING; a dispute would let them
    take both the refund and a split."""
    refunding = walk(order(), S.FUNDED, S.CONFIRMED, S.REFUNDING)
    with pytest.raises(Conflict, match="cannot dispute an order that is refunding"):
        orders.transition(refunding, S.DISPUTED, now=T0 + 99)


def test_every_state_is_reachable_from_awaiting_payment():
    seen, todo = {S.AWAITING_PAYMENT}, [S.AWAITING_PAYMENT]
    while todo:
        for nxt in orders.ALLOWED[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(OrderState)


@pytest.mark.parametrize(
    "path",
    [
        (S.FUNDED, S.CONFIRMED, S.ACCEPTED, S.FULFILLED, S.COMPLETED),  # release
        (S.CONFIRMED, S.DECLINED, S.REFUNDED),  # declined, refunded
        (S.FUNDED, S.CONFIRMED, S.REFUNDING, S.REFUNDED),  # never accepted: buyer + moderator
        (S.FUNDED, S.CONFIRMED, S.ACCEPTED, S.DISPUTED, S.DECIDED, S.RESOLVED),  # dispute split
        (S.FUNDED, S.CONFIRMED, S.ACCEPTED, S.FULFILLED, S.CLAIMED),  # timeout claim
        (S.EXPIRED,),
        (S.FUNDED, S.AWAITING_PAYMENT, S.FUNDED, S.CONFIRMED, S.FUNDED, S.CONFIRMED),  # a payment evicted, seen again
        (S.EXPIRED, S.DECLINED, S.REFUNDED),  # paid after expiry: refunded
        (S.FUNDED, S.CONFIRMED, S.ACCEPTED, S.FULFILLED, S.DISPUTED, S.COMPLETED),  # dispute, then released
    ],
)
def test_the_flows_of_the_design_are_allowed(path):
    o = walk(order(), *path)
    assert o.state is path[-1]
    assert [h.state for h in o.history] == list(path)
    assert [h.at for h in o.history] == [T0 + 1 + n for n in range(len(path))]
    assert o.updated_at == T0 + len(path)
    assert o.history[0].note == f"to {path[0].value}"


@pytest.mark.parametrize(
    ("start", "to", "message"),
    [
        (S.DECLINED, S.ACCEPTED, "cannot accept an order that is declined"),
        (S.AWAITING_PAYMENT, S.ACCEPTED, "cannot accept an order that is awaiting payment"),
        (S.ACCEPTED, S.ACCEPTED, "cannot accept an order that is accepted"),
        (S.COMPLETED, S.DECLINED, "cannot decline or refund an order that is completed"),
        (S.CONFIRMED, S.FULFILLED, "cannot fulfill an order that is confirmed"),
        (S.AWAITING_PAYMENT, S.CLAIMED, "cannot claim an order that is awaiting payment"),
        (S.FUNDED, S.EXPIRED, "cannot expire an order that is funded"),
        (S.RESOLVED, S.DISPUTED, "cannot dispute an order that is resolved"),
        (S.DECIDED, S.COMPLETED, "cannot complete an order that is decided"),
    ],
)
def test_forbidden_moves_are_conflicts_with_a_reason(start, to, message):
    o = moved(order(), start)
    with pytest.raises(Conflict) as caught:
        orders.transition(o, to, now=T0 + 50)
    assert caught.value.message == message
    assert caught.value.status == 409
    assert not orders.can(o, to)


def test_transition_does_not_change_the_original():
    o = order()
    after = orders.transition(o, S.FUNDED, now=T0 + 5)
    assert o.state is S.AWAITING_PAYMENT and o.history == ()
    assert after.state is S.FUNDED and after.id == o.id


def test_holds_funds():
    assert not orders.holds_funds(S.AWAITING_PAYMENT)
    assert orders.holds_funds(S.FUNDED) and orders.holds_funds(S.DECIDED)
    assert not any(orders.holds_funds(s) for s in FINAL_STATES)


def test_units_go_back_on_expiry_or_a_refund_before_shipping():
    assert orders.gives_back_stock(walk(order(), S.EXPIRED))
    assert orders.gives_back_stock(walk(order(), S.FUNDED, S.CONFIRMED, S.DECLINED, S.REFUNDED))
    shipped = walk(order(), S.FUNDED, S.CONFIRMED, S.ACCEPTED, S.FULFILLED, S.DECLINED, S.REFUNDED)
    assert not orders.gives_back_stock(shipped)
    # Review finding 1: an order that will not ship gives its units back at once.
    assert orders.gives_back_stock(walk(order(), S.FUNDED, S.CONFIRMED, S.DECLINED))
    assert orders.gives_back_stock(walk(order(), S.FUNDED, S.CONFIRMED, S.REFUNDING))
    assert orders.gives_back_stock(walk(order(), S.FUNDED, S.CONFIRMED, S.CLAIMED))
    assert not orders.gives_back_stock(walk(order(), *shipped_path(), S.CLAIMED))
    assert not orders.gives_back_stock(walk(order(), S.FUNDED, S.CONFIRMED, S.ACCEPTED, S.DISPUTED, S.DECIDED))


def payout(kind=PayoutKind.RELEASE):
    return Payout(kind, (), Sats(300), Sats(0), "cHNidP8=", (Party.VENDOR,), T0 + 7)


def test_helpers_change_one_thing_and_the_time():
    o = order()
    funding = Funding(Sats(12_000), (("ab" * 32, 0, 12_000),), 0, None)
    assert orders.with_funding(o, funding, now=T0 + 3).funding == funding
    assert orders.with_funding(o, Funding(), now=T0 + 3) is o  # nothing new: same record, no write needed
    pending = orders.with_pending(o, payout(), now=T0 + 4)
    assert pending.pending == payout() and pending.updated_at == T0 + 4
    done = orders.with_payout(pending, payout(), now=T0 + 5)
    assert done.pending is None and done.payouts == (payout(),)
    msg = Message(T0 + 6, Party.BUYER, "sealed")
    assert orders.with_message(o, msg, now=T0 + 6).messages == (msg,)
    assert orders.with_accept_by(o, T0 + 99, now=T0 + 7).accept_by == T0 + 99
    assert orders.with_fulfillment(o, "DHL 123", now=T0 + 8).fulfillment_note == "DHL 123"
    assert orders.with_extra(o, "buyer_node", "x" * 56, now=T0 + 9).extra == {"buyer_node": "x" * 56}
    assert orders.label(S.AWAITING_PAYMENT) == "awaiting payment"


def shipped_path():
    return (S.FUNDED, S.CONFIRMED, S.ACCEPTED, S.FULFILLED)
