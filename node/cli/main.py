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
from .backup import add_backup_commands
from .commands import add_listing_commands, add_node_command, add_store_commands
from .demo import add_demo_commands
from .discovery import add_discovery_commands
from .doctor import add_doctor_command
from .logs import setup_logging
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
    from ..app.metrics import SCRAPE_FILE, metrics_token
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
        metrics_token(config.data_dir, renew=args.new_metrics_token)  # GET /metrics only: docs/metrics.md
    finally:
        lock.release()
    if not created and password_hash is None and not args.new_token and not args.new_metrics_token:
        out(f"{config.data_dir} is already initialised (use --reset-password or --new-token to change them)")
        return 0
    out(f"initialised {config.data_dir}")
    out(f"admin API token: {token_path} (mode 0600)")
    out(f"scrape-only token for GET /metrics: {config.data_dir / SCRAPE_FILE} (mode 0600)")
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
    p.add_argument("--new-metrics-token", action="store_true", help="replace the scrape-only metrics.token")
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
    add_backup_commands(sub, common)
    add_demo_commands(sub, common)
    add_doctor_command(sub, common)
    return parser


def _report(json_logs: bool, message: str, *details: str) -> None:
    """The reason a command ends: with ``log_format = json`` a JSON record at ERROR (and the plain line only
    when stderr is a terminal, for the person at it); else the plain line."""
    if json_logs:
        log.error("%s", "\n  ".join((message, *details)))
    if not json_logs or sys.stderr.isatty():
        print(f"pasar: {message}", file=sys.stderr)
        for line in details:
            print(f"  {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    json_logs = False  # until the settings are read, errors are plain lines
    try:
        data_dir = cfg.resolve_data_dir(getattr(args, "data_dir", None), os.environ)
        flags = {s.name: getattr(args, s.name) for s in cfg.SETTINGS if hasattr(args, s.name)}
        config = cfg.load(data_dir, flags=flags)
        setup_logging(config.log_level, config.log_format)
        json_logs = config.log_format == "json"
        if getattr(args, "needs_init", True) and not (data_dir / "node.json").exists():
            raise ConfigError(f"{data_dir} is not initialised: run `pasar init` first")
        return int(asyncio.run(args.func(args, config)))
    except ValidationError as exc:
        log.debug("the error in detail", exc_info=exc)
        _report(json_logs, f"error: {exc.headline}", *problem_lines(exc.fields))
        return 1
    except PasarError as exc:
        log.debug("the error in detail", exc_info=exc)  # --log-level debug: the traceback and its causes
        _report(json_logs, f"error: {exc.message}")
        return 1
    except BrokenPipeError:  # `pasar config | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a data dir that can't be made or read (/proc, permissions, a full disk)
        where = f"{exc.filename}: " if exc.filename else ""
        _report(json_logs, f"error: {where}{exc.strerror or exc}")
        return 1
    except KeyboardInterrupt:
        _report(json_logs, "interrupted")
        return 130
    except UnicodeDecodeError:
        _report(json_logs, "error: the file is not UTF-8 text")
        return 1


if __name__ == "__main__":
    sys.exit(main())
