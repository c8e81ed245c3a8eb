"""``pasar store ...`` and ``pasar listing ...``: each runs operations of ``node.operations`` on a backend."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from .. import operations as ops
from ..core import config as cfg
from ..core.errors import ConfigError
from .importing import cmd_listing_import
from .output import out, read_file


# -- stores ------------------------------------------------------------------
async def cmd_store_create(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        store = await backend.run(
            ops.stores.create_store, ops.stores.NewStore({"name": args.name, "description": args.description or ""})
        )
    out(store["address"])
    return 0


async def cmd_store_list(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        stores = await backend.run(ops.stores.list_stores, ops.NoInput())
    if args.json:
        out(json.dumps(stores, indent=2))
        return 0
    for s in stores:
        out(f"{s['address']}  {s['name']}  {s['local_url'] or '(port chosen at run)'}  {s['status']}")
    if not stores:
        out("no stores yet: pasar store create NAME")
    return 0


def _confirm_delete(store: ops.stores.StoreSummary, config: cfg.Config) -> None:
    """Ask on a terminal; anything but "yes" deletes nothing."""
    if not sys.stdin.isatty():
        raise ConfigError(f"not deleting store {store['name']!r} without confirmation: add --yes")
    out(f"Delete store {store['name']!r} ({store['address']})?")
    out("Its onion address stops being published and its listener stops. Its folder, with its key,")
    out(f"listings and images, moves to {config.data_dir / 'deleted'}/, from where it can be restored.")
    if _ask('Type "yes" to delete it: ').strip().lower() != "yes":
        raise ConfigError("not confirmed; nothing was deleted")


def _ask(prompt: str) -> str:
    """One answer from the terminal; Ctrl-C stops at once (asyncio's handler would wait), end of input is ""."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return input(prompt)
    except EOFError:
        return ""
    finally:
        signal.signal(signal.SIGINT, previous)


async def cmd_store_delete(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        store = await backend.run(ops.stores.get_store, ops.stores.StoreRef(args.store))
        onion = store["onion"]
        if not args.yes:
            _confirm_delete(store, config)  # blocks on purpose: nothing else runs meanwhile
        gone = await backend.run(ops.stores.delete_store, ops.stores.StoreBody(onion, {"confirm": onion}))
    out(f"deleted store {gone['name']!r} ({onion}.onion); its onion address is no longer published")
    out(f"its key and data are in {gone['moved_to']}")
    out(f"to restore it: stop the node, move that folder back to {config.data_dir / 'stores' / onion}, start the node")
    return 0


async def cmd_store_set_port(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        store = await backend.run(ops.stores.update_store, ops.stores.StoreBody(args.store, {"port": args.port}))
    where = f"port {store['port']}" if store["port"] else "a free port at each start"
    if store["status"] == "stopped":
        out(f"store {store['address']} now uses {where}, from the next `pasar run`")
    else:
        out(f"store {store['address']} now uses {where}: {store['local_url'] or 'not listening'} ({store['status']})")
    return 0


# -- listings ----------------------------------------------------------------
def _listing_from_args(args: argparse.Namespace) -> dict[str, object]:
    from ..market import lineformats

    data: dict[str, object] = {}
    if args.json_file:
        try:
            data = json.loads(Path(args.json_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{args.json_file}: cannot read listing JSON: {exc}") from exc
    for name in ("title", "description", "category", "tags", "kind", "price_sat", "inventory"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    if args.shipping:
        data["shipping"] = lineformats.parse_shipping("\n".join(args.shipping))
    return data


async def cmd_listing_add(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    data = _listing_from_args(args)
    async with open_backend(config) as backend:
        onion = await backend.resolve(args.store)
        images = [(await backend.add_image(onion, read_file(p)))["id"] for p in args.image or []]
        if images:
            before = data.get("images", [])
            data["images"] = (before if isinstance(before, list) else [before]) + images
        listing = (await backend.add_listings(onion, [data]))[0]
    out(listing["id"])
    return 0


async def cmd_listing_list(args: argparse.Namespace, config: cfg.Config) -> int:
    from ..web.render import sats
    from .backends import open_backend

    async with open_backend(config) as backend:
        items = await backend.run(ops.listings.list_listings, ops.stores.StoreRef(args.store))
    if args.json:
        out(json.dumps(items, indent=2, ensure_ascii=False))
        return 0
    for item in items:
        state = "active" if item["active"] else "hidden"
        out(f"{item['id']}  {sats(item['price_sat']):>16}  {state:6}  {item['title']}")
    return 0


async def cmd_listing_remove(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        await backend.run(
            ops.listings.delete_listing, ops.listings.ListingRef(await backend.resolve(args.store), args.id)
        )
    out(f"removed {args.id}")
    return 0


def _positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 1000, got {text!r}")
    return int(text)


def _line_number(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a line number from 1, got {text!r}")
    return int(text)


def add_store_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    store = sub.add_parser("store", parents=[common], help="create, list and delete stores; change their ports")
    actions = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    p = actions.add_parser("create", parents=[common], help="create a store; prints its onion address")
    p.add_argument("name")
    p.add_argument("--description")
    p.set_defaults(func=cmd_store_create)
    p = actions.add_parser("list", parents=[common], help="list stores")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_store_list)
    p = actions.add_parser(
        "delete", parents=[common], help="delete a store: unpublish it, move its folder (with its key) to deleted/"
    )
    p.add_argument("store", metavar="STORE", help="onion address, unique prefix or name")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_store_delete)
    p = actions.add_parser("set-port", parents=[common], help="change the loopback port of a store's listener")
    p.add_argument("store", metavar="STORE", help="onion address, unique prefix or name")
    p.add_argument("port", metavar="PORT", help='1024-65535, or "auto" for the next free port from store_port_base')
    p.set_defaults(func=cmd_store_set_port)


def add_listing_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    listing = sub.add_parser("listing", parents=[common], help="add, list, remove and import listings")
    actions = listing.add_subparsers(dest="listing_command", required=True, metavar="ACTION")
    p = actions.add_parser("add", parents=[common], help="add a listing; prints its id")
    p.add_argument("--store", required=True, help="onion address, unique prefix or name")
    p.add_argument("--title")
    p.add_argument("--price-sat", dest="price_sat", help="price in satoshis (whole number)")
    p.add_argument("--description")
    p.add_argument("--category")
    p.add_argument("--tags", help="comma-separated")
    p.add_argument("--kind", choices=("physical", "digital", "service"))
    p.add_argument("--inventory", help="items in stock (omit for unlimited)")
    p.add_argument("--shipping", action="append", help="'Name | US, CA | price_sat' (repeatable)")
    p.add_argument("--image", action="append", help="image file (repeatable)")
    p.add_argument("--json", dest="json_file", help="read the listing from a JSON file (flags override it)")
    p.set_defaults(func=cmd_listing_add)
    p = actions.add_parser("list", parents=[common], help="list a store's listings")
    p.add_argument("--store", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_listing_list)
    p = actions.add_parser("remove", parents=[common], help="remove a listing")
    p.add_argument("--store", required=True)
    p.add_argument("id")
    p.set_defaults(func=cmd_listing_remove)
    p = actions.add_parser("import", parents=[common], help="bulk-add listings from a CSV file")
    p.add_argument("--store", required=True)
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument(
        "--batch", type=_positive, default=None,
        help="listings per atomic write (1-1000); default: 50, then growing with the import (fast for big files)",
    )  # fmt: skip
    p.add_argument("--from-line", dest="from_line", type=_line_number, default=1, metavar="LINE",
                   help="import only the rows starting on this line of the file or later (to resume)")  # fmt: skip
    p.set_defaults(func=cmd_listing_import)


async def cmd_node(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        info = await backend.run(ops.info.node_info, ops.NoInput())
    if args.json:
        out(json.dumps(info, indent=2))
        return 0
    stores, listings = info["stores"], info["listings"]
    out(f"pasar {info['version']}: {stores} store{'s' * (stores != 1)}, {listings} listing{'s' * (listings != 1)}")
    out(f"tor: {info['tor']['mode']}, {info['tor']['state']}")
    if info["onion"]:
        gossip = "on" if info["gossip"] else "off (gossip = false)"
        out(f"node onion: {info['onion']}.onion ({info['node_status']}); gossip {gossip}")
    peers, known = info["peers"], info["announcements"]
    out(f"{peers} peer{'s' * (peers != 1)}, {known} store announcement{'s' * (known != 1)}")
    out(f"directory: {info['directory_stores']} stores, {info['listings_indexed']} listings indexed")
    if info["directory_onion"]:
        out(f"public directory: {info['directory_onion']}.onion")
    return 0


def add_node_command(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "node", parents=[common], help="show this node: version, stores, listings, tor, node onion, peers, directory"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_node)
