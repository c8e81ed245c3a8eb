"""The checks of ``Config``'s settings (each returns a problem or None), and the address helpers they use."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path


def port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a port number 0-65535 (0 = any free port)"


def positive(value: int) -> str | None:
    return None if value > 0 else "must be greater than 0"


def loopback(value: str) -> str | None:
    try:
        if ipaddress.ip_address(value).is_loopback:
            return None
    except ValueError:
        pass
    return "must be a loopback IP address such as 127.0.0.1 (listeners are never public)"


def ttl(value: int) -> str | None:
    return None if value >= 3600 else "must be at least 3600 (catalogs are re-signed at half their lifetime)"


def announce_ttl(value: int) -> str | None:
    """Peers refuse an announcement that lives longer than 30 days (docs/protocol.md)."""
    return ttl(value) or (None if value <= 30 * 86400 else "must be at most 2592000 (30 days: peers refuse longer)")


def host_port(value: str) -> tuple[str, int] | None:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        return None
    return host, int(port)


def ipv4_loopback(host: str) -> bool:
    """Tor endpoints: IPv4 loopback only (stem 1.8.2 cannot connect to IPv6 control ports)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback


def tor_control(value: str) -> str | None:
    if value == "" or value.startswith("/"):
        return None
    parsed = host_port(value)
    if parsed and ipv4_loopback(parsed[0]):
        return None
    return (
        "must be empty (Pasar starts its own tor), a loopback HOST:PORT such as 127.0.0.1:9051, "
        "or a control socket path"
    )


def tor_socks(value: str) -> str | None:
    parsed = host_port(value) if value else None
    if value == "" or (parsed and ipv4_loopback(parsed[0])):
        return None
    return "must be empty (ask tor) or a loopback HOST:PORT such as 127.0.0.1:9050"


def at_least(minimum: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if value >= minimum else f"must be at least {minimum}"

    return check


def onions(value: tuple[str, ...]) -> str | None:
    """Node onion addresses (56 characters, ``.onion`` optional), checksum included."""
    from .addresses import is_address, normalize

    bad = [v for v in value if not is_address(normalize(v))]
    return f"must list v3 onion addresses; not one: {', '.join(map(repr, bad))}" if bad else None


def log_level(value: str) -> str | None:
    levels = ("debug", "info", "warning", "error")
    return None if value.lower() in levels else f"must be one of {', '.join(levels)}"


def absolute_or_empty(value: str) -> str | None:
    if not value or Path(value).expanduser().is_absolute():
        return None
    return "must be an absolute path (a relative one would depend on the directory the node starts in)"


def log_format(value: str) -> str | None:
    return None if value in ("text", "json") else "must be text or json"


NETWORKS = ("main", "test", "signet", "regtest")
"""``bitcoin_network`` values; Core's ``getblockchaininfo`` chain "testnet4" also counts as "test"."""


def between(low: int, high: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}"

    return check


def network(value: str) -> str | None:
    return None if value in NETWORKS else f"must be one of {', '.join(NETWORKS)}"


def rpc_url(value: str) -> str | None:
    scheme, sep, rest = value.partition("://")
    if value == "" or (sep and scheme in ("http", "https") and rest and "@" not in rest):
        return None
    return "must be empty (the network's default port on 127.0.0.1) or http://HOST:PORT, without credentials"


def poll(value: float) -> str | None:
    return None if value >= 0.2 else "must be at least 0.2"
