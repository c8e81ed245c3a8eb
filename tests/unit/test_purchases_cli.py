"""``pasar purchases`` argument parsing and output (node/cli/purchases.py), without a node."""

from __future__ import annotations

import argparse

from node.cli import purchases as C
from node.operations import purchases as P
from tests.unit.purchase_helpers import MODERATOR, STORE


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="pasar")
    C.add_purchase_commands(root.add_subparsers(dest="command"), argparse.ArgumentParser(add_help=False))
    return root


def test_buy_and_each_action_parse_into_the_operations_bodies():
    args = parser().parse_args(["purchases", "buy", STORE, "lst1", "--moderator", MODERATOR, "--qty", "2"])
    assert args.func is C.cmd_purchases and args.purchases_command == "buy"
    body = C._new(args)
    assert body == {
        "store": STORE,
        "listing": "lst1",
        "sku": None,
        "qty": 2,
        "shipping": None,
        "moderator": MODERATOR,
        "ship_to": "",
        "coupon": None,
    }
    assert P.purchase_request(body).qty == 2
    pay = parser().parse_args(["purchases", "pay", "ab" * 16, "--address", "bcrt1q", "--amount-sat", "5"])
    assert C._body("pay", pay) == {"address": "bcrt1q", "amount_sat": 5}
    assert C._body("pay", parser().parse_args(["purchases", "pay", "ab" * 16])) == {}
    review = parser().parse_args(["purchases", "review", "ab" * 16, "--rating", "4", "--text", "ok"])
    assert C._body("review", review) == {"rating": 4, "text": "ok"}
    dispute = parser().parse_args(["purchases", "dispute", "ab" * 16, "--statement", "late"])
    assert C._body("dispute", dispute) == {"statement": "late"}
    assert C._body("message", parser().parse_args(["purchases", "message", "ab" * 16, "hi"])) == {"text": "hi"}
    assert C._body("release", parser().parse_args(["purchases", "release", "ab" * 16])) == {}
    assert C.ACTIONS["release"][0] is P.purchases_release


def test_show_lines_name_what_to_do():
    view = {
        "id": "ab" * 16,
        "store": STORE,
        "state": "awaiting_payment",
        "reason": "",
        "qty": 2,
        "title": "Tea",
        "sku": None,
        "amount_sat": 150_000,
        "paid_txid": None,
        "escrow_address": "bcrt1qescrow",
        "moderator": MODERATOR,
        "refund_address": "bcrt1qrefund",
        "pay_by": 1_800_000_000,
        "history": [{"at": 1_800_000_000, "state": "awaiting_payment", "note": "escrow checked"}],
        "messages": [{"id": "1", "kind": "order", "delivery": "delivered", "direction": "out", "at": 1_800_000_000}],
        "pending_payout": None,
    }
    lines = C._show(view)
    assert any("pay 150000 sat to bcrt1qescrow" in line for line in lines)
    assert any("order" in line and "delivered" in line for line in lines)
    split = {"kind": "split", "outputs": [], "fee_sat": 300, "signed": False, "txid": None, "received_at": 1}
    waiting = {**split, "waiting": "a split is signed only in a dispute: it waits until you or the store open one"}
    lines = C._show({**view, "pending_payout": waiting, "payout_refused": "the split pays the moderator too much"})
    assert any("(a split is signed only in a dispute" in line for line in lines)
    assert any("refused, nothing signed: the split pays the moderator too much" in line for line in lines)
    assert any("stored, not yet taken" in line for line in C._show({**view, "paying": True, "paid_txid": "ab"}))
