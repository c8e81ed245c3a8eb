"""``pasar purchases``: this node's purchases from other stores' nodes (list, show, buy and the buyer's actions)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..core import config as cfg
from ..operations import purchases as P
from ..operations.base import Operation
from ..operations.purchases import NewPurchase, PurchaseBody, PurchaseQuery, PurchaseRef
from ..purchases.views import PurchaseView
from .output import out

# verb -> (operation, help); the arguments each takes are added in ``_actions_parser``.
ACTIONS: dict[str, tuple[Operation[PurchaseBody, PurchaseView], str]] = {
    "pay": (P.purchases_pay, "pay the escrow from this node's wallet (after the store's escrow passed the checks)"),
    "release": (P.purchases_release, "sign the release the store sent (the money goes to the vendor)"),
    "dispute": (P.purchases_dispute, "open a dispute: the statement goes to the store and the moderator"),
    "review": (P.purchases_review, "sign a review (1-5) of a completed purchase; it is gossiped"),
    "message": (P.purchases_message, "send the store a message (end-to-end encrypted)"),
}


def _when(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) + " UTC" if ts else "-"


def _line(p: PurchaseView) -> str:
    return f"{p['id']}  {p['state']:16}  {p['amount_sat']:>12} sat  {p['title'][:40]:40}  {_when(p['created_at'])}"


def _show(p: PurchaseView) -> list[str]:
    lines = [
        f"purchase {p['id']} from {p['store']}.onion: {p['state']}" + (f" ({p['reason']})" if p["reason"] else ""),
        f"item: {p['qty']} x {p['title']}" + (f" ({p['sku']})" if p["sku"] else ""),
        f"amount {p['amount_sat']} sat" + (f", paid in {p['paid_txid']}" if p["paid_txid"] else ", not paid"),
        f"escrow {p['escrow_address'] or '(no checked escrow yet)'}",
        f"moderator {p['moderator']}.onion; refund address {p['refund_address']}",
    ]
    if p["escrow_address"] and not p["paid_txid"] and p["state"] == "awaiting_payment":
        lines.append(
            f"pay {p['amount_sat']} sat to {p['escrow_address']} by {_when(p['pay_by'])} (pasar purchases pay)"
        )
    lines += [f"  {_when(h['at'])}  {h['state']}" + (f": {h['note']}" if h["note"] else "") for h in p["history"]]
    for m in p["messages"]:
        text = f": {m['text']}" if "text" in m else ""
        lines.append(f"  {m['direction']:3} {m['kind']:8} {m['delivery']:12} {_when(m['at'])}{text}")
    payout = p["pending_payout"]
    if payout is not None:
        outputs = ", ".join(f"{o['role']} {o['amount_sat']} sat" for o in payout["outputs"])
        state = "signed" if payout["signed"] else payout.get("waiting") or "waiting for your signature"
        lines.append(f"pending {payout['kind']}: {outputs}, fee {payout['fee_sat']} sat ({state})")
    if p.get("payout_refused"):
        lines.append(f"the store's last payout was refused, nothing signed: {p['payout_refused']}")
    if p.get("paying"):
        lines.append(f"payment {p['paid_txid']} stored, not yet taken by Bitcoin Core: this node sends it again")
    return lines


def _body(verb: str, args: argparse.Namespace) -> dict[str, object]:
    if verb == "pay":
        return {k: v for k, v in (("address", args.address), ("amount_sat", args.amount_sat)) if v is not None}
    if verb == "dispute":
        return {"statement": args.statement}
    if verb == "review":
        return {"rating": args.rating, "text": args.text or ""}
    if verb == "message":
        return {"text": args.text}
    return {}


def _new(args: argparse.Namespace) -> dict[str, object]:
    return {
        "store": args.store,
        "listing": args.listing,
        "sku": args.sku,
        "qty": args.qty,
        "shipping": args.shipping,
        "moderator": args.moderator,
        "ship_to": args.ship_to or "",
        "coupon": args.coupon,
    }


async def cmd_purchases(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    verb = args.purchases_command
    async with open_backend(config) as backend:
        if verb == "list":
            found = await backend.run(P.purchases_list, PurchaseQuery(str(args.limit), str(args.offset)))
            out(
                json.dumps(found, indent=2, ensure_ascii=False)
                if args.json
                else "\n".join(map(_line, found)) or "no purchases"
            )
            return 0
        if verb == "show":
            shown = await backend.run(P.purchases_show, PurchaseRef(args.id))
            out(json.dumps(shown, indent=2, ensure_ascii=False) if args.json else "\n".join(_show(shown)))
            return 0
        if verb == "buy":
            placed = await backend.run(P.purchases_place, NewPurchase(_new(args)))
            out(
                f"purchase {placed['id']}: {placed['state']} (the order is sent when the store's node answers; "
                "nothing is paid before it answers with its escrow)"
            )
            return 0
        op, _ = ACTIONS[verb]
        done = await backend.run(op, PurchaseBody(args.id, _body(verb, args)))
    out(f"purchase {done['id']}: {done['state']}")
    return 0


def _actions_parser(actions: Any, common: argparse.ArgumentParser) -> None:
    for verb, (_, text) in ACTIONS.items():
        p = actions.add_parser(verb, parents=[common], help=text)
        p.add_argument("id", metavar="ID")
        if verb == "pay":
            p.add_argument("--address", help="the escrow address you confirm (refused if it is not the escrow's)")
            p.add_argument("--amount-sat", dest="amount_sat", type=int, help="the amount you confirm, in sat")
        elif verb == "dispute":
            p.add_argument("--statement", required=True)
        elif verb == "review":
            p.add_argument("--rating", type=int, required=True, choices=range(1, 6), metavar="1-5")
            p.add_argument("--text", default="")
        elif verb == "message":
            p.add_argument("text", metavar="TEXT")
        p.set_defaults(func=cmd_purchases)


def add_purchase_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    purchases = sub.add_parser("purchases", parents=[common], help="this node's purchases from other stores")
    actions = purchases.add_subparsers(dest="purchases_command", required=True, metavar="ACTION")
    p = actions.add_parser("list", parents=[common], help="list purchases, newest first")
    p.add_argument("--limit", type=int, default=100, help="at most this many (1-500, default 100)")
    p.add_argument("--offset", type=int, default=0, help="skip this many of the newest (the next page)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_purchases)
    p = actions.add_parser("show", parents=[common], help="a purchase with its history, messages and pending payout")
    p.add_argument("id", metavar="ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_purchases)
    p = actions.add_parser("buy", parents=[common], help="order a listing of a store in this node's directory")
    p.add_argument("store", metavar="STORE", help="the store's onion address")
    p.add_argument("listing", metavar="LISTING", help="the listing's id")
    p.add_argument("--moderator", required=True, help="one of the store's moderators (node onion)")
    p.add_argument("--qty", type=int, default=1)
    p.add_argument("--sku", help="the variant, for a listing with variants")
    p.add_argument("--shipping", help="the shipping option's name")
    p.add_argument("--ship-to", dest="ship_to", help="shipping address or contact (encrypted to the store)")
    p.add_argument("--coupon")
    p.set_defaults(func=cmd_purchases)
    _actions_parser(actions, common)
