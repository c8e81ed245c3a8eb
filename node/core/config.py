"""One declared settings table, validated at start.

Precedence: defaults < ``<data-dir>/pasar.toml`` < ``PASAR_*`` environment <
command-line flags. Unknown keys and wrong types raise ConfigError with a
one-line message.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from . import setting_checks as checks
from .dsn import check_dsn
from .errors import ConfigError
from .setting_checks import NETWORKS as NETWORKS
from .setting_checks import host_port as host_port

ENV_PREFIX = "PASAR_"
# Environment variables that are not settings (read by the CLI directly; PASAR_BITCOIND,
# PASAR_PG_BIN and PASAR_TEST_WORKERS by the test script and `pasar demo`).
ENV_RESERVED = {
    *("PASAR_DATA_DIR", "PASAR_ADMIN_PASSWORD", "PASAR_BACKUP_PASSPHRASE"),
    *("PASAR_BITCOIND", "PASAR_PG_BIN", "PASAR_TEST_WORKERS"),
}
CONFIG_FILE = "pasar.toml"
T = TypeVar("T")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pasar"


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None


def setting(default: T, help: str, check: Callable[[T], str | None] | None = None, *, secret: bool = False) -> T:
    """A field of ``Config``: its default, its help text and its check, declared once."""
    return field(default=default, metadata={"help": help, "check": check, "secret": secret})


@dataclass(frozen=True)
class Config:
    """Every setting, declared once: the table, the defaults and the typed values are this class."""

    data_dir: Path
    admin_host: str = setting("127.0.0.1", "admin listener address (loopback only)", checks.loopback)
    admin_port: int = setting(8420, "admin listener port (0 = any free port)", checks.port)
    store_host: str = setting("127.0.0.1", "store listeners' address (loopback only)", checks.loopback)
    store_port_base: int = setting(
        8421,
        "first port given to new stores; each store keeps its port, moved with `pasar store set-port` "
        "(0 = any free port each run)",
        checks.port,
    )
    page_size: int = setting(24, "listings per storefront page", checks.positive)
    catalog_ttl: int = setting(7 * 86400, "seconds a signed catalog stays valid (>= 3600)", checks.ttl)
    max_image_bytes: int = setting(8 * 1024 * 1024, "largest image upload, bytes", checks.positive)
    max_image_side: int = setting(1600, "images are scaled down to this many pixels", checks.positive)
    max_images: int = setting(10, "images per listing", checks.positive)
    log_level: str = setting("info", "debug, info, warning or error", checks.log_level)
    tor_control: str = setting(
        "",
        "a running tor's control port HOST:PORT or socket path; empty = Pasar starts its own tor",
        checks.tor_control,
    )
    tor_socks: str = setting(
        "", "tor's SocksPort HOST:PORT for outbound connections; empty = ask tor", checks.tor_socks
    )
    tor_password: str = setting("", "control port password, if that tor uses HashedControlPassword", secret=True)
    tor_binary: str = setting("tor", "the tor program Pasar starts when tor_control is empty")
    tor_extra_torrc: str = setting(
        "", "a torrc fragment the embedded tor includes (bridges, or a private test network)"
    )

    # -- discovery (docs/design.md "Discovery") --
    gossip: bool = setting(
        True, "take part in gossip: announce this node's stores and learn other stores (false: none of it)"
    )
    seed_peers: tuple[str, ...] = setting(
        (), "other nodes' onion addresses to gossip with first (comma-separated; add more with `pasar peers add`)",
        checks.onions,
    )  # fmt: skip
    gossip_interval: int = setting(300, "seconds between gossip rounds (>= 5)", checks.at_least(5))
    crawl_interval: int = setting(
        900, "seconds between crawls of announced stores' catalogs (>= 5)", checks.at_least(5)
    )
    announce_ttl: int = setting(
        7 * 86400, "seconds a store announcement stays valid (3600 to 2592000, 30 days)", checks.announce_ttl
    )
    max_peers: int = setting(256, "gossip peers kept (the least reachable are dropped)", checks.positive)
    max_announcements: int = setting(
        20000, "store announcements kept (those expiring soonest are dropped)", checks.positive
    )
    unreachable_drop_after: int = setting(
        14 * 86400, "seconds a store may stay unreachable before the directory drops it", checks.at_least(60)
    )
    mirror_total_bytes: int = setting(
        256 * 1024 * 1024, "bytes of other stores' signed catalogs kept to serve as mirrors", checks.positive
    )
    directory_public: bool = setting(False, "serve this node's directory (search pages) on a public onion of its own")
    blocklist_subscriptions: tuple[str, ...] = setting(
        (), "directory onions whose signed blocklists this node applies (comma-separated)", checks.onions
    )
    node_port: int = setting(0, "loopback port of the node onion's listener (0 = any free port)", checks.port)
    directory_port: int = setting(
        0, "loopback port of the public directory's listener (0 = any free port)", checks.port
    )

    # -- payments: Bitcoin Core over JSON-RPC and 2-of-3 escrow (docs/api.md "Payments") --
    payments: bool = setting(True, "take orders with Bitcoin escrow (false: no checkout)")
    bitcoin_network: str = setting("main", "main, test, signet or regtest: Core's chain and addresses", checks.network)
    bitcoin_rpc_url: str = setting(
        "", "Bitcoin Core's JSON-RPC URL; empty = http://127.0.0.1:<the network's default port>", checks.rpc_url
    )
    bitcoin_rpc_cookie: str = setting(
        "", "Core's .cookie file; empty = the network's under ~/.bitcoin (unused with bitcoin_rpc_user)"
    )
    bitcoin_rpc_user: str = setting("", "RPC user (rpcauth); empty = cookie authentication")
    bitcoin_rpc_password: str = setting("", "RPC password of bitcoin_rpc_user", secret=True)
    bitcoin_wallet: str = setting("", "Core's signing wallet for escrow keys and signatures (empty = the default)")
    escrow_timeout_blocks: int = setting(
        6480,
        "blocks after payment until the vendor alone may claim the escrow (144 to 65535)",
        checks.between(144, 65535),
    )
    confirmations: int = setting(
        1, "confirmations before the vendor is told to ship (0 to 100)", checks.between(0, 100)
    )
    payment_window: int = setting(
        7200, "seconds an order may stay unpaid (its stock is then released)", checks.at_least(60)
    )
    accept_window: int = setting(
        3 * 86400, "seconds the vendor has to accept a paid order before it is refunded", checks.at_least(60)
    )
    max_unpaid_orders: int = setting(
        50, "unpaid orders a store holds at once; checkout waits beyond that (each holds stock)", checks.positive
    )
    payment_poll_interval: float = setting(5.0, "seconds between checks of escrow addresses (>= 0.2)", checks.poll)
    fallback_fee_rate: int = setting(10, "sat/vB for payouts when Core has no fee estimate", checks.positive)
    max_fee_rate: int = setting(500, "highest fee rate (sat/vB) a payout may pay; higher is refused", checks.positive)

    # -- node-to-node orders: signed store-and-forward messages (docs/protocol.md "Order messages") --
    message_retry_first: float = setting(
        15.0, "seconds before an unacknowledged order message is first re-sent (doubles, with jitter)", checks.poll
    )
    message_retry_cap: float = setting(
        3600.0, "longest wait (seconds) between re-sends of an order message", checks.poll
    )
    message_give_up: int = setting(
        14 * 86400,
        "seconds before an unacknowledged order message shows failed (it is re-sent until acked, for 365 days)",
        checks.at_least(60),
    )
    purchase_poll_interval: float = setting(
        60.0, "seconds between asks to a store for news on this node's open purchases (>= 0.2)", checks.poll
    )
    review_grace: int = setting(
        86400,
        "seconds a store has to put a gossiped review in its catalog before the directory flags it",
        checks.positive,
    )

    # -- operations: backups (docs/backup.md), directory backend (docs/directory-postgres.md), logs --
    backup_dir: str = setting(
        "", "absolute path of a folder for scheduled encrypted backups (empty = none)", checks.absolute_or_empty
    )
    backup_interval: int = setting(86400, "seconds between scheduled backups (>= 60)", checks.at_least(60))
    backup_keep: int = setting(7, "scheduled backups kept in backup_dir (the oldest are deleted)", checks.positive)
    directory_dsn: str = setting(
        "",
        "PostgreSQL connection string for the directory index (empty = directory.sqlite)",
        check_dsn,
        secret=True,
    )
    log_format: str = setting("text", "log lines as text or json (one JSON object per line)", checks.log_format)

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin.token"


def _table() -> tuple[Setting, ...]:
    hints = get_type_hints(Config)
    return tuple(
        Setting(f.name, _plain(hints[f.name]), f.default, f.metadata["help"], f.metadata["check"])
        for f in fields(Config)
        if f.name != "data_dir"
    )


def _plain(hint: Any) -> type:
    """``tuple[str, ...]`` (a list setting) is ``tuple``; the others are plain types."""
    plain: type = tuple if getattr(hint, "__origin__", None) is tuple else hint
    return plain


SETTINGS: tuple[Setting, ...] = _table()
"""The settings table (name, type, default, help, check), read from ``Config``'s fields."""
SECRET_SETTINGS = frozenset(f.name for f in fields(Config) if f.metadata.get("secret"))
"""Settings whose values are never printed."""
_BY_NAME = {s.name: s for s in SETTINGS}


def _words(value: Any, where: str) -> tuple[str, ...]:
    """A list setting: a TOML array of strings, or text separated by commas or spaces."""
    if isinstance(value, str):
        return tuple(w for w in value.replace(",", " ").split() if w)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise ConfigError(f"{where} must be a list of strings, got {value!r}")


def _coerce(setting: Setting, value: Any, source: str) -> Any:
    where = f"{source}: setting {setting.name!r}"
    shown = "(not shown: a secret)" if setting.name in SECRET_SETTINGS else repr(value)
    if setting.type is tuple:
        value = _words(value, where)
    if isinstance(value, str) and setting.type is not str:
        text = value.strip()
        try:
            if setting.type is bool:
                if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(text)
                value = text.lower() in ("1", "true", "yes")
            else:
                value = setting.type(text)
        except ValueError:
            raise ConfigError(f"{where} must be {setting.type.__name__}, got {shown}") from None
    if setting.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, setting.type) or (setting.type is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {setting.type.__name__}, got {shown}")
    problem = setting.check(value) if setting.check else None
    if problem:
        raise ConfigError(f"{where} {problem}, got {shown}")
    return str(value).lower() if setting.name == "log_level" else value


def _flatten(raw: dict[str, Any]) -> dict[str, Any]:
    """``[tor] control = ...`` (or ``tor.control = ...``) is the setting ``tor_control``."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{sub}": v for sub, v in value.items()})
        else:
            flat[key] = value
    return flat


def _from_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    out = {}
    for key, value in _flatten(raw).items():
        if key not in _BY_NAME:
            raise ConfigError(f"{path}: unknown setting {key!r} (known: {', '.join(_BY_NAME)})")
        out[key] = _coerce(_BY_NAME[key], value, str(path))
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX) or var in ENV_RESERVED:
            continue
        key = var[len(ENV_PREFIX) :].lower()
        if key not in _BY_NAME:
            raise ConfigError(f"environment: unknown setting {var} (known: {', '.join(_BY_NAME)})")
        out[key] = _coerce(_BY_NAME[key], value, f"environment {var}")
    return out


def resolve_data_dir(flag: str | None, env: Mapping[str, str]) -> Path:
    raw = flag or env.get("PASAR_DATA_DIR")
    return Path(raw).expanduser().resolve() if raw else default_data_dir()


def load(
    data_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Build the Config; ``flags`` holds only options the user actually gave."""
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    values.update(_from_file(data_dir / CONFIG_FILE))
    values.update(_from_env(os.environ if env is None else env))
    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key not in _BY_NAME:
            raise ConfigError(f"unknown option {key!r}")
        values[key] = _coerce(_BY_NAME[key], value, "command line")
    return Config(data_dir=data_dir, **values)


def describe() -> list[tuple[str, str, str]]:
    """(name, default, help) rows, for ``pasar config`` and the docs."""
    return [(s.name, repr(s.default), s.help) for s in SETTINGS]
