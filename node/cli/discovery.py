"""``pasar peers``, ``pasar crawl``, ``pasar search``, ``pasar block`` and ``pasar reports``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from .. import operations as ops
from ..core import config as cfg
from ..discovery.directory import COUNT_CAP
from ..operations.discovery import BlockRef, Body, CrawlView, PeerRef, SearchParams
from .output import out


def _when(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) + " UTC" if ts else "never"


# -- peers -------------------------------------------------------------------
async def cmd_peers_list(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        peers = await backend.run(ops.discovery.list_peers, ops.NoInput())
    if args.json:
        out(json.dumps(peers, indent=2))
        return 0
    for p in peers:
        state = "banned" if p["banned"] else f"score {p['score']:.2f}, {p['failures']} failures"
        out(f"{p['onion']}.onion  {p['source']:7}  last success {_when(p['last_success'])}  {state}")
    if not peers:
        out("no peers yet: pasar peers add ONION (another node's onion, see its `pasar node`)")
    return 0


async def cmd_peers_add(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        peer = await backend.run(ops.discovery.add_peer, Body({"onion": args.onion}))
    out(f"added peer {peer['onion']}.onion")
    return 0


async def cmd_peers_remove(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        await backend.run(ops.discovery.remove_peer, PeerRef(args.onion))
    out(f"removed peer {args.onion}")
    return 0


async def cmd_peers_ban(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        await backend.run(ops.discovery.ban_peer, PeerRef(args.onion))
    out(f"banned peer {args.onion}: this node no longer gossips with it (undo: pasar peers remove)")
    return 0


# -- crawl -------------------------------------------------------------------
def _bar(view: CrawlView, width: int = 30) -> str:
    total = max(view["total"], 1)
    filled = int(width * min(view["done"], total) / total)
    return (
        f"\r[{'#' * filled}{'.' * (width - filled)}] {view['done']}/{view['total']} stores, "
        f"{view['indexed']} listings indexed, {view['failed']} failed, {view['mirrored']} from mirrors"
    )


async def cmd_crawl(args: argparse.Namespace, config: cfg.Config) -> int:
    """One crawl pass now; a progress bar on stderr while it runs (polled from the node)."""
    from .backends import open_backend

    async with open_backend(config) as backend:
        task = asyncio.create_task(backend.run(ops.discovery.crawl, ops.NoInput()))
        tty = sys.stderr.isatty()
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            if tty and not task.done():
                view = await backend.run(ops.discovery.crawl_status, ops.NoInput())
                print(_bar(view), end="", file=sys.stderr, flush=True)
        result = await task
    if tty:
        print(_bar(result), file=sys.stderr)
    out(
        f"crawled {result['done']} of {result['total']} stores: {result['indexed']} listings indexed, "
        f"{result['failed']} unreachable, {result['mirrored']} from mirrors"
    )
    return 0


# -- search ------------------------------------------------------------------
async def cmd_search(args: argparse.Namespace, config: cfg.Config) -> int:
    from ..web.render import sats
    from .backends import open_backend

    params = SearchParams(
        q=" ".join(args.query),
        limit=str(args.limit),
        offset=str(args.offset),
        category=args.category or "",
        max_price_sat=args.max_price_sat or "",
        ships_to=args.ships_to or "",
    )
    async with open_backend(config) as backend:
        page = await backend.run(ops.discovery.search, params)
    if args.json:
        out(json.dumps(page, indent=2, ensure_ascii=False))
        return 0
    for r in page["results"]:
        offline = "" if r["source"] == "direct" and r["reachable"] else f"  (offline, as of {_when(r['as_of'])})"
        out(f"{sats(r['price_sat']):>16}  {r['title'][:60]:60}  {r['store']}.onion/listing/{r['listing']}{offline}")
    shown, total = len(page["results"]), page["total"]
    count = f"{COUNT_CAP:,}+" if total > COUNT_CAP else str(total)  # counting stops past the cap
    out(f"{count} result{'s' * (total != 1)}" + (f", showing {shown}" if shown < total else ""))
    return 0


# -- moderation --------------------------------------------------------------
async def cmd_block(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        if args.block_command == "list":
            blocks = await backend.run(ops.discovery.list_blocks, ops.NoInput())
            for b in blocks:
                out(f"{b['kind']:5}  {b['value']}  ({b['source']}, {_when(b['created_at'])}) {b['reason']}")
            if not blocks:
                out("nothing is blocked")
        elif args.block_command == "add":
            body = {"kind": args.kind, "value": args.value, "reason": args.reason or ""}
            await backend.run(ops.discovery.add_block, Body(body))
            out(f"blocked {args.kind} {args.value}: never crawled, listed, mirrored or relayed by this node")
        else:
            await backend.run(ops.discovery.remove_block, BlockRef(args.kind, args.value))
            out(f"unblocked {args.kind} {args.value}")
    return 0


async def cmd_reports(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        reports = await backend.run(ops.discovery.list_reports, ops.NoInput())
    if args.json:
        out(json.dumps(reports, indent=2, ensure_ascii=False))
        return 0
    for r in reports:
        out(f"#{r['id']}  {_when(r['created_at'])}  {r['store']}.onion/listing/{r['listing']}  {r['reason']}")
    if not reports:
        out("no reports")
    return 0


def add_discovery_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    peers = sub.add_parser("peers", parents=[common], help="other nodes this node gossips with")
    actions = peers.add_subparsers(dest="peers_command", required=True, metavar="ACTION")
    p = actions.add_parser("list", parents=[common], help="list peers with last success, failures and score")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_peers_list)
    p = actions.add_parser("add", parents=[common], help="gossip with another node (its node onion)")
    p.add_argument("onion", metavar="ONION")
    p.set_defaults(func=cmd_peers_add)
    p = actions.add_parser("remove", parents=[common], help="stop gossiping with a node")
    p.add_argument("onion", metavar="ONION")
    p.set_defaults(func=cmd_peers_remove)
    p = actions.add_parser("ban", parents=[common], help="never gossip with a node again")
    p.add_argument("onion", metavar="ONION")
    p.set_defaults(func=cmd_peers_ban)

    p = sub.add_parser("crawl", parents=[common], help="fetch announced stores' catalogs into the directory now")
    p.set_defaults(func=cmd_crawl)

    p = sub.add_parser("search", parents=[common], help="search the directory of stores this node found")
    p.add_argument("query", nargs="*", metavar="QUERY")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--category")
    p.add_argument("--max-price-sat", dest="max_price_sat")
    p.add_argument("--ships-to", dest="ships_to", help="two-letter country code")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    block = sub.add_parser("block", parents=[common], help="block stores or tags from this node's directory")
    actions = block.add_subparsers(dest="block_command", required=True, metavar="ACTION")
    p = actions.add_parser("list", parents=[common], help="list blocked stores and tags")
    p.set_defaults(func=cmd_block)
    for verb, text in (("add", "block a store or a tag"), ("remove", "unblock a store or a tag")):
        p = actions.add_parser(verb, parents=[common], help=text)
        p.add_argument("kind", choices=("store", "tag"))
        p.add_argument("value", metavar="VALUE", help="a store's onion address, or a tag")
        if verb == "add":
            p.add_argument("--reason")
        p.set_defaults(func=cmd_block)

    p = sub.add_parser("reports", parents=[common], help="listings buyers reported on this node's directory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reports)
