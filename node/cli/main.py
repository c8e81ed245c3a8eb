"""``pasar`` command line: argv -> Config -> action. The only place that prints or exits."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..adapters.datadir import DataDirLock
from ..adapters.fsutil import atomic_write, make_private_dir
from ..adapters.store import Storage
from ..core import config as cfg
from ..core.errors import ConfigError, PasarError, ValidationError
from .importing import cmd_listing_import
from .output import out, problem_lines, read_file
from .testnet import add_testnet_commands

log = logging.getLogger("pasar")
Command = Callable[[argparse.Namespace, cfg.Config], Awaitable[int]]
MIN_PASSWORD = 8


# -- init --------------------------------------------------------------------
def _ask_password() -> str:
    env = os.environ.get("PASAR_ADMIN_PASSWORD")
    if env is not None:
        password = env
    elif not sys.stdin.isatty():
        raise ConfigError("no terminal to ask for the admin password: set PASAR_ADMIN_PASSWORD")
    else:
        password = getpass.getpass("Admin password: ")
        if getpass.getpass("Again: ") != password:
            raise ConfigError("the passwords differ; nothing was changed")
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the admin password needs at least {MIN_PASSWORD} characters")
    return password


async def cmd_init(args: argparse.Namespace, config: cfg.Config) -> int:
    from ..core.crypto import hash_password

    # Ask first: a refused password must not leave a data dir nobody can log in to.
    password_hash = None
    if args.reset_password or not Storage.has_admin_password(config.data_dir):
        password_hash = await asyncio.to_thread(hash_password, _ask_password())
    make_private_dir(config.data_dir)
    lock = DataDirLock(config.data_dir)
    lock.acquire()  # a running node would keep the old token and password: stop it first
    try:
        created = Storage.initialise(config.data_dir)
        if password_hash is not None:
            Storage.set_admin_password_hash(config.data_dir, password_hash)
        token_path = config.admin_token_path
        if created or args.new_token or not token_path.exists():
            atomic_write(token_path, (secrets.token_urlsafe(32) + "\n").encode(), mode=0o600)
    finally:
        lock.release()
    if not created and password_hash is None and not args.new_token:
        out(f"{config.data_dir} is already initialised (use --reset-password or --new-token to change them)")
        return 0
    out(f"initialised {config.data_dir}")
    out(f"admin API token: {token_path} (mode 0600)")
    return 0


# -- run ---------------------------------------------------------------------
async def cmd_run(args: argparse.Namespace, config: cfg.Config) -> int:
    from ..app import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(config, stop, use_tor=not args.no_tor)
    log.info("stopped")
    return 0


# -- stores ------------------------------------------------------------------
async def cmd_store_create(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        store = await backend.create_store({"name": args.name, "description": args.description or ""})
    out(store["address"])
    return 0


async def cmd_store_list(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        stores = await backend.stores()
    if args.json:
        out(json.dumps(stores, indent=2))
        return 0
    for s in stores:
        out(f"{s['address']}  {s['name']}  {s['local_url'] or '(port chosen at run)'}  {s['status']}")
    if not stores:
        out("no stores yet: pasar store create NAME")
    return 0


def _confirm_delete(store: dict[str, Any], config: cfg.Config) -> None:
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
        onion = await backend.resolve(args.store)
        if not args.yes:
            store = next(s for s in await backend.stores() if s["onion"] == onion)
            _confirm_delete(store, config)  # blocks on purpose: nothing else runs meanwhile
        gone = await backend.delete_store(onion)
    out(f"deleted store {gone['name']!r} ({onion}.onion); its onion address is no longer published")
    out(f"its key and data are in {gone['moved_to']}")
    out(f"to restore it: stop the node, move that folder back to {config.data_dir / 'stores' / onion}, start the node")
    return 0


async def cmd_store_set_port(args: argparse.Namespace, config: cfg.Config) -> int:
    from .backends import open_backend

    async with open_backend(config) as backend:
        store = await backend.set_port(await backend.resolve(args.store), args.port)
    where = f"port {store['port']}" if store["port"] else "a free port at each start"
    if store["status"] == "stopped":
        out(f"store {store['address']} now uses {where}, from the next `pasar run`")
    else:
        out(f"store {store['address']} now uses {where}: {store['local_url'] or 'not listening'} ({store['status']})")
    return 0


# -- listings ----------------------------------------------------------------
def _listing_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from ..market import lineformats

    data: dict[str, Any] = {}
    if args.json_file:
        try:
            data = json.loads(Path(args.json_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{args.json_file}: cannot read listing JSON: {exc}") from None
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
            data["images"] = data.get("images", []) + images
        listing = (await backend.add_listings(onion, [data]))[0]
    out(listing["id"])
    return 0


async def cmd_listing_list(args: argparse.Namespace, config: cfg.Config) -> int:
    from ..web.render import sats
    from .backends import open_backend

    async with open_backend(config) as backend:
        items = await backend.listings(await backend.resolve(args.store))
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
        await backend.remove_listing(await backend.resolve(args.store), args.id)
    out(f"removed {args.id}")
    return 0


async def cmd_config(args: argparse.Namespace, config: cfg.Config) -> int:
    for name, default, help_ in cfg.describe():
        value = getattr(config, name)
        shown = "'(set)'" if name in cfg.SECRET_SETTINGS and value else repr(value)
        out(f"{name} = {shown}    # default {default}: {help_}")
    return 0


# -- argument parsing --------------------------------------------------------
def _positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 1000, got {text!r}")
    return int(text)


def _line_number(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a line number from 1, got {text!r}")
    return int(text)


class _Parser(argparse.ArgumentParser):
    """No abbreviations anywhere: "--store" must not be read as "--store-host".

    Sub-command parsers are made with their parent's class, so they inherit this.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def _common() -> _Parser:
    """Options every command takes: --data-dir and one flag per setting.

    Defaults are SUPPRESS so a sub-command never resets a value given before
    it, and values are checked by the settings table, like the TOML file's.
    """
    common = _Parser(add_help=False)
    common.add_argument(
        "--data-dir", default=argparse.SUPPRESS, help="data directory (default ~/.local/share/pasar, or PASAR_DATA_DIR)"
    )
    group = common.add_argument_group("settings (override pasar.toml and PASAR_* variables)")
    for setting in cfg.SETTINGS:
        flag = "--" + setting.name.replace("_", "-")
        group.add_argument(
            flag, dest=setting.name, default=argparse.SUPPRESS, metavar=setting.type.__name__.upper(), help=setting.help
        )
    return common


def _add_store_commands(sub: Any, common: _Parser) -> None:
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


def _add_listing_commands(sub: Any, common: _Parser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="pasar", description="Pasar: a peer-to-peer marketplace node.", parents=[common])
    parser.add_argument("--version", action="version", version=f"pasar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", parents=[common], help="create the data directory, admin password and API token")
    p.add_argument("--reset-password", action="store_true", help="set a new admin password")
    p.add_argument("--new-token", action="store_true", help="replace the admin API token")
    p.set_defaults(func=cmd_init, needs_init=False)

    p = sub.add_parser("run", parents=[common], help="run the node (stores, admin)")
    p.add_argument("--no-tor", action="store_true", help="serve stores on loopback only, without Tor")
    p.set_defaults(func=cmd_run)

    add_testnet_commands(sub, common)
    p = sub.add_parser("config", parents=[common], help="show the effective settings")
    p.set_defaults(func=cmd_config, needs_init=False)
    _add_store_commands(sub, common)
    _add_listing_commands(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        data_dir = cfg.resolve_data_dir(getattr(args, "data_dir", None), os.environ)
        flags = {s.name: getattr(args, s.name) for s in cfg.SETTINGS if hasattr(args, s.name)}
        config = cfg.load(data_dir, flags=flags)
        logging.basicConfig(
            level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
        if getattr(args, "needs_init", True) and not (data_dir / "node.json").exists():
            raise ConfigError(f"{data_dir} is not initialised: run `pasar init` first")
        return int(asyncio.run(args.func(args, config)))
    except ValidationError as exc:
        print(f"pasar: error: {exc.headline}", file=sys.stderr)
        for line in problem_lines(exc.fields):
            print(f"  {line}", file=sys.stderr)
        return 1
    except PasarError as exc:
        print(f"pasar: error: {exc.message}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `pasar config | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a data dir that can't be made or read (/proc, permissions, a full disk)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pasar: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pasar: interrupted", file=sys.stderr)
        return 130
    except UnicodeDecodeError:
        print("pasar: error: the file is not UTF-8 text", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
