"""``pasar orders``, ``pasar disputes``, ``pasar moderation`` and ``pasar moderators``."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from .. import operations as ops
from ..core import config as cfg
from ..core.errors import ConfigError
from ..operations.order_views import CaseView, OrderDetail, OrderView
from ..operations.payments import Body, OrderBody, OrderQuery, OrderRef, StoreBody
from .output import out, read_file

P = ops.payments
# verb -> (operation, the body's field, its option's help); None: the action takes no text.
ACTIONS: dict[str, tuple[ops.Operation[OrderBody, OrderView], str | None, str]] = {
    "accept": (P.accept_order, None, "accept a paid order (then ship it and `fulfill`)"),
    "decline": (P.decline_order, "reason", "decline: a refund signed by this node waits for the buyer"),
    "fulfill": (P.fulfill_order, "note", "mark shipped: a release signed by this node waits for the buyer"),
    "release": (P.release_order, None, "sign the pending payout (e.g. a split decided for the vendor)"),
    "refund": (P.refund_order, "reason", "refund the buyer: the refund, signed, waits for the buyer"),
    "claim": (P.claim_order, None, "claim the escrow alone after its timeout (says from which block)"),
    "dispute": (P.dispute_order, "statement", "open a dispute: the moderator gets both statements"),
    "message": (P.message_order, "text", "send the buyer a message (shown on their order page)"),
}


def _when(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) + " UTC" if ts else "-"


def _line(o: OrderView) -> str:
    paid = f"{o['paid_sat']}/{o['amount_sat']} sat"
    return f"{o['id']}  {o['state']:16}  {paid:>24}  {o['item']['title'][:40]:40}  {_when(o['created_at'])}"


def _pending_lines(o: OrderView) -> list[str]:
    p = o["pending"]
    if p is None:
        return []
    outputs = ", ".join(f"{x['role']} {x['amount_sat']} sat" for x in p["outputs"])
    signed = ", ".join(p["signed_by"]) or "nobody yet"
    return [f"pending {p['action']}: {outputs}, fee {p['fee_sat']} sat (signed by {signed})", f"psbt: {p['psbt']}"]


def _show(o: OrderDetail) -> list[str]:
    item = o["item"]
    lines = [
        f"order {o['id']} in store {o['store']}.onion: {o['state']}",
        f"item: {item['qty']} x {item['title']}" + (f" ({item['sku']})" if item["sku"] else ""),
        f"amount {o['amount_sat']} sat, paid {o['paid_sat']} sat ({o['confirmations']} confirmations)"
        + (f", {o['missing_sat']} sat missing" if o["missing_sat"] else ""),
        f"escrow {o['escrow_address']} (timeout {o['timeout_blocks']} blocks)",
        f"moderator {o['moderator']}.onion (fee {o['moderator_fee_sat']} sat)",
        f"refund address {o['refund_address']}",
        f"ship to: {o['ship_to']}",
    ]
    lines += [f"  {_when(h['at'])}  {h['state']}" + (f": {h['note']}" if h["note"] else "") for h in o["history"]]
    lines += [f"  message from {m['sender']} at {_when(m['at'])}: {m['text']}" for m in o["messages"]]
    return lines + _pending_lines(o)


async def cmd_orders(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    verb = args.orders_command
    async with open_backend(config) as backend:
        if verb == "list":
            store = await backend.resolve(args.store) if args.store else ""
            query = OrderQuery(store=store, state=args.state or "", limit=str(args.limit), offset=str(args.offset))
            orders = await backend.run(P.list_orders, query)
            out(json.dumps(orders, indent=2) if args.json else "\n".join(map(_line, orders)) or "no orders")
            return 0
        if verb == "show":
            detail = await backend.run(P.get_order, OrderRef(args.id))
            out(json.dumps(detail, indent=2, ensure_ascii=False) if args.json else "\n".join(_show(detail)))
            return 0
        op, field, _ = ACTIONS[verb]
        text = getattr(args, field, None) if field else None
        order = await backend.run(op, OrderBody(args.id, {field: text} if field and text else {}))
    out(f"order {order['id']}: {order['state']}")
    for line in _pending_lines(order)[:1]:
        out(line)
    return 0


async def cmd_disputes(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        if args.disputes_command == "decide":
            body = {"buyer_sat": args.buyer_sat, "vendor_sat": args.vendor_sat}
            case = await backend.run(P.decide_dispute, OrderBody(args.id, body))
            out(f"decided {case['id']}: buyer {args.buyer_sat} sat, vendor {args.vendor_sat} sat; split signed")
            return 0
        cases = await backend.run(P.list_disputes, ops.NoInput())
    if args.json:
        out(json.dumps(cases, indent=2, ensure_ascii=False))
        return 0
    for c in cases:
        out(_case_line(c))
    if not cases:
        out("no disputes")
    return 0


def _case_line(c: CaseView) -> str:
    paid = f"{c['paid_sat']} sat paid" if c["paid_sat"] is not None else f"{c['amount_sat']} sat"
    decided = f", decided buyer {c['buyer_sat']} / vendor {c['vendor_sat']} sat" if c["buyer_sat"] is not None else ""
    lines = [f"{c['id']}  {c['state']:13}  order {c['order_id']} of {c['store']}.onion, {paid}{decided}"]
    return "\n".join(lines + [f"  {s['party']}: {s['text']}" for s in c["statements"]])


def _moderation_body(args: argparse.Namespace) -> dict[str, object]:
    body: dict[str, object] = {}
    if args.enabled is not None:
        body["enabled"] = args.enabled == "on"
    if args.fee_percent is not None:
        body["fee_percent"] = args.fee_percent
    if args.fee_sat is not None:
        body["fee_sat"] = args.fee_sat
    if args.terms_file:
        body["terms"] = read_file(args.terms_file).decode()
    elif args.terms is not None:
        body["terms"] = args.terms
    if not body:
        raise ConfigError("nothing to change: give --enabled, --fee-percent, --fee-sat, --terms or --terms-file")
    return body


async def cmd_moderation(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        if args.moderation_command == "set":
            offer = await backend.run(P.set_moderation, Body(_moderation_body(args)))
        else:
            offer = await backend.run(P.get_moderation, ops.NoInput())
    if args.json:
        out(json.dumps(offer, indent=2, ensure_ascii=False))
        return 0
    state = "offered" if offer["enabled"] else "not offered"
    out(f"moderation {state} by {offer['onion']}.onion: fee {offer['fee_percent']}% + {offer['fee_sat']} sat")
    if offer["terms"]:
        out(f"terms: {offer['terms']}")
    return 0


async def cmd_moderators(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    if not args.onions and not args.none:
        raise ConfigError("name the moderators' node onions, or pass --none to accept no moderator (no checkout)")
    async with open_backend(config) as backend:
        onion = await backend.resolve(args.store)
        done = await backend.run(P.set_store_moderators, StoreBody(onion, {"moderators": args.onions}))
    shown = ", ".join(f"{m}.onion" for m in done["moderators"]) or "none (buyers cannot check out)"
    out(f"moderators of {done['store']}.onion: {shown}")
    for terms in done["moderator_terms"]:
        fee = f"{terms['fee_percent']}% + {terms['fee_sat']} sat"
        out(f"  {terms['onion']}.onion: fee {fee}; terms: {terms['terms'][:200]}")
    for warning in done["warnings"]:
        out(f"warning: {warning}")
    return 0


def _orders_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    orders = sub.add_parser("orders", parents=[common], help="the stores' orders and the vendor's actions")
    actions = orders.add_subparsers(dest="orders_command", required=True, metavar="ACTION")
    p = actions.add_parser("list", parents=[common], help="list orders, newest first")
    p.add_argument("--store", help="onion address, unique prefix or name")
    p.add_argument("--state", help="e.g. awaiting_payment, confirmed, fulfilled, disputed")
    p.add_argument("--limit", type=int, default=100, help="at most this many (1-1000, default 100)")
    p.add_argument("--offset", type=int, default=0, help="skip this many of the newest (the next page)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_orders)
    p = actions.add_parser("show", parents=[common], help="an order with its history, messages and pending payout")
    p.add_argument("id", metavar="ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_orders)
    for verb, (_, field, text) in ACTIONS.items():
        p = actions.add_parser(verb, parents=[common], help=text)
        p.add_argument("id", metavar="ID")
        if field == "text":
            p.add_argument("text", metavar="TEXT")
        elif field is not None:
            p.add_argument(f"--{field}", required=field == "statement")
        p.set_defaults(func=cmd_orders)


def add_payment_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    _orders_parser(sub, common)
    disputes = sub.add_parser("disputes", parents=[common], help="disputes this node moderates")
    actions = disputes.add_subparsers(dest="disputes_command", required=True, metavar="ACTION")
    p = actions.add_parser("list", parents=[common], help="list disputes with both statements")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_disputes)
    p = actions.add_parser("decide", parents=[common], help="decide a split; this node's wallet signs it")
    p.add_argument("id", metavar="ID")
    p.add_argument("--buyer-sat", dest="buyer_sat", type=int, required=True)
    p.add_argument("--vendor-sat", dest="vendor_sat", type=int, required=True)
    p.set_defaults(func=cmd_disputes)

    moderation = sub.add_parser("moderation", parents=[common], help="offer moderation to other nodes' stores")
    actions = moderation.add_subparsers(dest="moderation_command", required=True, metavar="ACTION")
    p = actions.add_parser("show", parents=[common], help="this node's moderation offer")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_moderation)
    p = actions.add_parser("set", parents=[common], help="change the offer (fee, terms, on or off)")
    p.add_argument("--enabled", choices=("on", "off"))
    p.add_argument("--fee-percent", dest="fee_percent", type=int, help="0 to 50, of the order amount")
    p.add_argument("--fee-sat", dest="fee_sat", type=int, help="a fixed fee in satoshis")
    p.add_argument("--terms", help="the terms text buyers and vendors see")
    p.add_argument("--terms-file", dest="terms_file", help="read the terms from this file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_moderation)

    p = sub.add_parser("moderators", parents=[common], help="set the moderators a store accepts (node onions)")
    p.add_argument("store", metavar="STORE", help="onion address, unique prefix or name")
    p.add_argument("onions", metavar="ONION", nargs="*", help="moderators' node onions (replaces the list)")
    p.add_argument("--none", action="store_true", help="accept no moderator: the store takes no orders")
    p.set_defaults(func=cmd_moderators)
