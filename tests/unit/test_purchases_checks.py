"""The buyer node's checks on a store's escrow answer and payouts (node/purchases/checks.py): each tampering refused."""

from __future__ import annotations

import dataclasses

import pytest

from node.core.crypto import StoreKey
from node.core.errors import BadRequest
from node.payments.models import Party, PayoutKind
from node.purchases import checks
from tests.unit.purchase_helpers import (
    AMOUNT,
    BUYER,
    MODERATOR_KEY,
    OTHER,
    REFUND,
    STRANGER,
    T0,
    V2,
    VENDOR_PAY,
    B,
    M,
    N,
    V,
    escrow_body,
    escrow_fields,
    moderator_answer,
    purchase,
    receipt,
)


def refused(body: dict, match: str, **changes) -> None:
    with pytest.raises(BadRequest, match=match):
        checks.escrow_answer(purchase(**changes), body, network="regtest", buyer=BUYER, now=T0)


def test_a_true_answer_passes_and_gives_the_escrow():
    ans = checks.escrow_answer(purchase(), escrow_body(), network="regtest", buyer=BUYER, now=T0)
    fields = escrow_fields()
    assert ans.escrow.descriptor == fields["descriptor"] and ans.escrow.address == fields["address"]
    assert (ans.escrow.buyer, ans.escrow.vendor, ans.escrow.moderator, ans.escrow.vendor_timeout) == (B, V, M, V2)
    assert (ans.amount_sat, ans.pay_by, ans.accept_window, ans.vendor_address) == (AMOUNT, T0 + 7200, 86400, VENDOR_PAY)
    assert ans.bare_descriptor + "#" in ans.escrow.descriptor


def test_an_old_moderator_answer_still_verifies():
    body = escrow_body(moderator_answer=moderator_answer(issued_at=T0 - 30 * 86400))
    checks.escrow_answer(purchase(), body, network="regtest", buyer=BUYER, now=T0)


def test_wrong_buyer_key_refused():
    fields = escrow_fields(b=OTHER)
    refused(escrow_body(escrow=fields), "buyer key is not this purchase's key")
    other_origin = dataclasses.replace(B, origin="[00000000/84h/1h/0h/0/1]")
    refused(escrow_body(escrow=escrow_fields(b=other_origin)), "buyer key")


def test_swapped_vendor_and_moderator_keys_refused():
    body = escrow_body(escrow=escrow_fields(v=M, m=V))  # consistent descriptor and address, keys swapped
    refused(body, "moderator key is not the key the moderator gave|another escrow address")


def test_another_moderator_key_refused():
    body = escrow_body(escrow=escrow_fields(m=OTHER))
    refused(body, "moderator key is not the key the moderator gave|another escrow address")


def test_timeout_changed_or_too_short_refused():
    refused(escrow_body(escrow=escrow_fields(n=N + 1)), "store publishes 144")
    refused(escrow_body(escrow=escrow_fields(n=100)), "under 144", store_timeout=None)


def test_amount_higher_refused_lower_only_with_a_coupon():
    item = escrow_body()["item"] | {"unit_price_sat": 75_000}
    refused(escrow_body(amount_sat=AMOUNT + 10_000, item=item), "asks 160000 sat")
    cheaper = escrow_body()["item"] | {"discount_sat": 5_000}
    refused(escrow_body(amount_sat=AMOUNT - 5_000, item=cheaper), "prices this order at 150000")
    ans = checks.escrow_answer(
        purchase(coupon="TEN"),
        escrow_body(amount_sat=AMOUNT - 5_000, item=cheaper),
        network="regtest",
        buyer=BUYER,
        now=T0,
    )
    assert ans.amount_sat == AMOUNT - 5_000
    refused(escrow_body(amount_sat=AMOUNT - 1), "not its own item price")


def test_address_or_descriptor_not_matching_the_keys_refused():
    fields = escrow_fields()
    refused(escrow_body(escrow=fields | {"address": STRANGER}), "address is not")
    other = escrow_fields(n=N + 6)["descriptor"]
    refused(escrow_body(escrow=fields | {"descriptor": other}), "descriptor is not the one its keys make")
    refused(escrow_body(escrow=fields | {"descriptor": fields["descriptor"][:-8] + "aaaaaaaa"}), "descriptor")


def test_moderator_answer_from_another_node_or_order_refused():
    stranger = StoreKey(bytes(range(5, 37)))
    refused(escrow_body(moderator_answer=moderator_answer(key=stranger)), "not by the moderator you chose")
    refused(escrow_body(moderator_answer=moderator_answer(order="f" * 32)), "another order or store")
    refused(escrow_body(moderator_answer=moderator_answer(store=MODERATOR_KEY.onion)), "another order or store")
    refused(escrow_body(moderator_answer=moderator_answer(address=STRANGER)), "another escrow address")
    refused(escrow_body(moderator_answer=None), "no moderator answer")
    forged = moderator_answer()
    forged["body"] = dict(forged["body"]) | {"fee_percent": 50}
    refused(escrow_body(moderator_answer=forged), "does not verify")


def test_item_changed_or_malformed_refused():
    item = escrow_body()["item"]
    refused(escrow_body(item=item | {"qty": 3, "unit_price_sat": 46_666}), "another item")
    refused(escrow_body(item=item | {"listing": "other"}), "another item")
    refused(escrow_body(escrow="x"), "no escrow object")
    refused(escrow_body(vendor_address="not-an-address"), "vendor_address")
    fields = escrow_fields() | {"extra": 1}
    refused(escrow_body(escrow=fields), "malformed escrow")


# -- payouts ------------------------------------------------------------------------------------------
def paid(**changes):
    base = {"escrow_amount_sat": AMOUNT, "vendor_address": VENDOR_PAY, "state": "fulfilled", "moderator_fee_sat": 9_500}
    return purchase(**(base | changes))


def payout(kind: str, *outputs: tuple[str, int, str]) -> dict:
    outs = [{"address": a, "amount_sat": n, "role": r} for a, n, r in outputs]
    return {"payout": {"kind": kind, "psbt": "cHNidP8=", "outputs": outs, "fee_sat": 500}}


def test_payout_roles_that_pass():
    rel = checks.payout(paid(), payout("release", (VENDOR_PAY, AMOUNT - 500, "vendor")), now=T0)
    assert rel.kind is PayoutKind.RELEASE and rel.outputs[0].role is Party.VENDOR and not rel.signed
    checks.payout(paid(), payout("refund", (REFUND, AMOUNT - 500, "buyer")), now=T0)
    split = payout("split", (REFUND, 50_000, "buyer"), (VENDOR_PAY, 90_000, "vendor"), (STRANGER, 9_500, "moderator"))
    assert len(checks.payout(paid(), split, now=T0).outputs) == 3


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (payout("release", (STRANGER, 100_000, "vendor")), "not to its escrow-time address"),
        (payout("release", (VENDOR_PAY, AMOUNT + 1, "vendor")), "more than the order's"),
        (payout("release", (VENDOR_PAY, 100_000, "vendor"), (STRANGER, 40_000, "buyer")), "not to your refund address"),
        (
            payout("release", (VENDOR_PAY, 100_000, "vendor"), (STRANGER, 40_000, "moderator")),
            "pays the moderator nothing",
        ),
        (payout("refund", (VENDOR_PAY, 100_000, "vendor")), "a refund pays the vendor nothing"),
        (payout("claim", (VENDOR_PAY, 100_000, "vendor")), "not a 'claim'"),
        (payout("release", (VENDOR_PAY, 100_000, "nobody")), "unknown role"),
        (payout("release"), "lists no outputs"),
    ],
)
def test_payout_tamperings_refused(body, match):
    with pytest.raises(BadRequest, match=match):
        checks.payout(paid(), body, now=T0)


@pytest.mark.parametrize(
    ("outputs", "match"),
    [
        # the store marks its own address "moderator" to take the escrow through a split
        ([(REFUND, 1_000, "buyer"), (VENDOR_PAY, 1_000, "vendor"), (STRANGER, 140_000, "moderator")], "agreed fee"),
        ([(REFUND, 50_000, "buyer"), (STRANGER, 5_000, "moderator"), (STRANGER, 5_000, "moderator")], "more than once"),
        ([(REFUND, 100_000, "buyer"), (VENDOR_PAY, 60_000, "vendor")], "more than the escrow's"),
    ],
)
def test_a_split_pays_the_moderator_at_most_its_signed_fee_once_and_shares_within_the_escrow(outputs, match):
    with pytest.raises(BadRequest, match=match):
        checks.payout(paid(), payout("split", *outputs), now=T0)


def test_the_moderator_fee_comes_from_its_signed_answer_and_a_split_waits_for_a_dispute():
    ans = checks.escrow_answer(purchase(), escrow_body(), network="regtest", buyer=BUYER, now=T0)
    assert ans.moderator_fee_sat == AMOUNT // 100  # fee_percent 1, fee_sat 0
    assert "only in a dispute" in checks.split_waits(paid())
    assert checks.split_waits(paid(disputed=True)) == ""
    assert checks.split_waits(paid(state="decided")) == ""


def test_the_escrow_answer_needs_the_stores_receipt_for_this_order():
    refused(escrow_body(receipt=None), "no receipt")
    refused(escrow_body(receipt=receipt(key=MODERATOR_KEY)), "receipt does not verify")
    refused(escrow_body(receipt=receipt(order="f" * 32)), "receipt names another order")
    refused(escrow_body(receipt=receipt(buyer=MODERATOR_KEY.onion)), "another buyer key")
    refused(escrow_body(receipt=receipt(address=STRANGER)), "another escrow address")
    refused(escrow_body(receipt=receipt(listing_hash="sha256:" + "cd" * 32)), "another listing")
    forged = receipt()
    forged["body"] = dict(forged["body"]) | {"order": "e" * 32}
    refused(escrow_body(receipt=forged), "does not verify")
    ans = checks.escrow_answer(purchase(), escrow_body(), network="regtest", buyer=BUYER, now=T0)
    assert '"pasar.receipt"' in ans.receipt
