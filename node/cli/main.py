"""``pasar`` command line: argv -> Config -> action. The only place that prints or exits."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .. import __version__
from ..adapters import dbfiles
from ..adapters.datadir import DataDirLock
from ..adapters.fsutil import atomic_write, make_private_dir
from ..core import config as cfg
from ..core.errors import ConfigError, PasarError, ValidationError
from .commands import add_listing_commands, add_node_command, add_store_commands
from .discovery import add_discovery_commands
from .output import out, problem_lines
from .payments import add_payment_commands
from .purchases import add_purchase_commands
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
    if args.reset_password or not dbfiles.has_admin_password(config.data_dir):
        password_hash = await asyncio.to_thread(hash_password, _ask_password())
    make_private_dir(config.data_dir)
    lock = DataDirLock(config.data_dir)
    lock.acquire()  # a running node would keep the old token and password: stop it first
    try:
        created = dbfiles.initialise(config.data_dir)
        if password_hash is not None:
            dbfiles.set_admin_password_hash(config.data_dir, password_hash)
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


async def cmd_config(args: argparse.Namespace, config: cfg.Config) -> int:
    for name, default, help_ in cfg.describe():
        value = getattr(config, name)
        shown = "'(set)'" if name in cfg.SECRET_SETTINGS and value else repr(value)
        out(f"{name} = {shown}    # default {default}: {help_}")
    return 0


# -- argument parsing --------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """No abbreviations anywhere: "--store" must not be read as "--store-host".

    Sub-command parsers are made with their parent's class, so they inherit this.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def _metavar(setting: cfg.Setting) -> str:
    return "LIST" if setting.type is tuple else setting.type.__name__.upper()


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
            flag, dest=setting.name, default=argparse.SUPPRESS, metavar=_metavar(setting), help=setting.help
        )
    return common


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
    add_store_commands(sub, common)
    add_listing_commands(sub, common)
    add_node_command(sub, common)
    add_discovery_commands(sub, common)
    add_payment_commands(sub, common)
    add_purchase_commands(sub, common)
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
        log.debug("the error in detail", exc_info=exc)
        print(f"pasar: error: {exc.headline}", file=sys.stderr)
        for line in problem_lines(exc.fields):
            print(f"  {line}", file=sys.stderr)
        return 1
    except PasarError as exc:
        log.debug("the error in detail", exc_info=exc)  # --log-level debug: the traceback and its causes
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
