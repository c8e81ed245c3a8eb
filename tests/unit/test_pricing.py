"""Checkout pricing: exact amounts (variant, qty, shipping, coupon) and every problem reported at once."""

import pytest

from node.core.errors import ValidationError
from node.core.models import Sats
from node.market import listings as L
from node.payments.pricing import MIN_ORDER_SAT, CheckoutForm, Reservation, available, inventories, price
from tests.unit.order_helpers import STORE, T0, listing

VARIANTS = [
    {"sku": "red-s", "label": "Red, S", "price_sat": 12_000, "inventory": 3},
    {"sku": "blue-m", "label": "Blue, M", "price_sat": None, "inventory": None},
    {"sku": "gone", "label": "Gone", "price_sat": None, "inventory": 0},
]


def form(**fields):
    return CheckoutForm(**{"listing": "lst000000001", "qty": "2", "shipping": "post", "ship_to": "Street 1", **fields})


def problems(item, f):
    with pytest.raises(ValidationError) as caught:
        price(item, f, now=T0)
    return caught.value.fields


def test_plain_listing_price_and_reservation():
    item, res = price(listing(), form(), now=T0, store=STORE)
    assert (item.unit_price_sat, item.qty, item.shipping_sat, item.discount_sat) == (10_000, 2, 2_000, 0)
    assert item.total_sat == 22_000
    assert item.sku is None and item.shipping == "post" and item.coupon is None
    assert item.listing_hash == L.public_view(listing())["hash"]
    assert res == Reservation(STORE, "lst000000001", None, 2, T0 - 1000, 5)


def test_variant_price_or_the_listings_and_its_inventory():
    lst = listing(variants=VARIANTS, inventory=None)
    item, res = price(lst, form(sku="red-s"), now=T0)
    assert item.unit_price_sat == 12_000 and item.sku == "red-s" and item.title == "Wool socks (Red, S)"
    assert res.inventory == 3 and res.sku == "red-s"
    item, res = price(lst, form(sku="blue-m", qty="7"), now=T0)
    assert item.unit_price_sat == 10_000 and res.inventory is None


def test_coupons_percent_of_items_amount_capped_case_insensitive():
    item, _ = price(listing(), form(coupon="tenoff"), now=T0)
    assert item.coupon == "TENOFF" and item.discount_sat == 2_000  # 10% of 20,000; shipping not discounted
    assert item.total_sat == 20_000
    item, _ = price(listing(), form(coupon="FLAT"), now=T0)
    assert item.discount_sat == 3_000 and item.total_sat == 19_000
    post = [{"name": "post", "regions": ["WORLDWIDE"], "price_sat": Sats(12_000)}]
    big = listing(coupons=[{"code": "ALL", "percent": None, "amount_sat": 10**9}], shipping=post)
    item, _ = price(big, form(coupon="all", qty="1"), now=T0)
    assert item.discount_sat == 10_000 and item.total_sat == 12_000  # never more than the items


def test_shipping_free_option_and_digital_items():
    item, _ = price(listing(), form(shipping="pickup"), now=T0)
    assert item.shipping_sat == 0 and item.total_sat == 20_000
    digital = listing(kind="digital", shipping=[])
    item, _ = price(digital, form(shipping="", ship_to=""), now=T0)
    assert item.shipping is None and item.total_sat == 20_000


def test_every_problem_at_once():
    lst = listing(variants=VARIANTS, inventory=None)
    found = problems(lst, form(sku="nope", qty="0", shipping="boat", coupon="FREE", ship_to=""))
    assert set(found) == {"sku", "qty", "shipping", "coupon", "ship_to"}
    assert "one of: post, pickup" in found["shipping"]


def test_caller_problems_are_reported_with_ours():
    with pytest.raises(ValidationError) as caught:
        price(listing(), form(qty="x"), now=T0, problems={"buyer_pubkey": "66 hex characters"})
    assert set(caught.value.fields) == {"buyer_pubkey", "qty"}


@pytest.mark.parametrize(
    ("changes", "fields", "field", "reason"),
    [
        ({}, {"listing": "other"}, "listing", "unknown listing"),
        ({"active": False}, {}, "listing", "no longer for sale"),
        ({"expires_at": T0}, {}, "listing", "no longer for sale"),
        ({}, {"sku": "red-s"}, "sku", "no variants"),
        ({"variants": VARIANTS, "inventory": None}, {"sku": ""}, "sku", "choose one of: red-s, blue-m, gone"),
        ({"variants": VARIANTS, "inventory": None}, {"sku": "gone"}, "qty", "sold out"),
        ({}, {"qty": "6"}, "qty", "only 5 left"),
        ({"min_qty": 3}, {}, "qty", "at least 3 per order"),
        ({"max_qty": 1}, {}, "qty", "at most 1 per order"),
        ({}, {"qty": "-1"}, "qty", "whole number"),
        ({}, {"qty": "1.5"}, "qty", "whole number"),
        ({}, {"shipping": ""}, "shipping", "choose a shipping option: post, pickup"),
        ({"shipping": [], "kind": "digital"}, {"shipping": "post"}, "shipping", "does not ship"),
        ({}, {"coupon": "NOPE"}, "coupon", "not valid"),
        ({}, {"ship_to": "x" * 2001}, "ship_to", "at most 2000"),
        ({}, {"ship_to": "  "}, "ship_to", "shipping address"),
        ({"price_sat": 100, "shipping": [{"name": "post", "regions": ["DE"], "price_sat": 0}]}, {}, "qty", "10000 sat"),
    ],
)
def test_each_problem(changes, fields, field, reason):
    found = problems(listing(**changes), form(**fields))
    assert field in found
    assert reason in found[field]


def test_minimum_is_the_constant():
    assert MIN_ORDER_SAT == 10_000


def test_available_subtracts_committed_never_below_zero():
    assert available(listing(), {}) == {None: 5}
    assert available(listing(), {None: 2}) == {None: 3}
    assert available(listing(), {None: 9}) == {None: 0}
    assert available(listing(inventory=None), {None: 9}) == {None: None}
    lst = listing(variants=VARIANTS, inventory=None)
    assert available(lst, {"red-s": 1, "blue-m": 4}) == {"red-s": 2, "blue-m": None, "gone": 0}


def test_inventories_are_the_merchants_counts_per_sku():
    assert inventories(listing()) == {None: 5}
    assert inventories(listing(inventory=None)) == {None: None}
    lst = listing(variants=VARIANTS, inventory=None)
    assert inventories(lst) == {"red-s": 3, "blue-m": None, "gone": 0}
    assert inventories(L.public_view(lst)) == inventories(lst)


def test_an_edit_that_keeps_the_count_reserves_against_the_same_figure():
    _, before = price(listing(), form(), now=T0, store=STORE)
    _, after = price(listing(title="Wool socks, warm", updated_at=T0), form(), now=T0, store=STORE)
    assert (before.inventory, after.inventory) == (5, 5)
    assert after.listing_updated_at == T0
