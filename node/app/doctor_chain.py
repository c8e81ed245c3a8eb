"""``pasar doctor``'s questions to Bitcoin Core: reachable, right chain, synced, wallets, clock.

A few read-only JSON-RPC calls over aiohttp, with the node's own settings and cookie (nothing is
loaded or created: the node's adapter does that at start). Each answer becomes a ``Check``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp

from ..adapters.bitcoin import CHAINS, MIN_CORE_VERSION, BitcoinSettings
from ..core.config import Config
from ..core.crypto import StoreKey
from ..core.errors import PasarError, WalletError
from ..operations.doctor import Check, Level, duration
from .payments import watch_wallet_name

RPC_TIMEOUT = 15.0
CLOCK_SKEW = 600  # seconds: past 10 minutes onion services break (descriptors are time-bound)
FUTURE_BLOCK = 7200  # Core refuses blocks dated over 2 hours ahead of its clock
STALE_TIP = 3 * 3600  # on a public chain, a tip this old means no sync (or a clock running ahead)


class _Rpc:
    def __init__(self, settings: BitcoinSettings, session: aiohttp.ClientSession) -> None:
        self._settings, self._session = settings, session

    async def __call__(self, method: str, *params: object) -> Any:
        user, password = self._settings.credentials()  # WalletError naming the cookie when unreadable
        body = {"jsonrpc": "1.0", "id": "pasar-doctor", "method": method, "params": list(params)}
        url = self._settings.url
        try:
            async with self._session.post(url, json=body, auth=aiohttp.BasicAuth(user, password)) as resp:
                if resp.status in (401, 403):
                    raise WalletError(
                        f"Bitcoin Core at {url} refused the login: check bitcoin_rpc_cookie "
                        "(or bitcoin_rpc_user and bitcoin_rpc_password)"
                    )
                reply = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise WalletError(
                f"Bitcoin Core did not answer {method} at {url} ({exc or type(exc).__name__}): is bitcoind running? "
                "check bitcoin_rpc_url"
            ) from exc
        if not isinstance(reply, dict) or reply.get("error"):
            error = reply.get("error") if isinstance(reply, dict) else reply
            raise WalletError(f"Bitcoin Core answered {method} with an error: {error}")
        return reply.get("result")


async def bitcoin_checks(config: Config, *, now: float | None = None) -> list[Check]:
    if not config.payments:
        return [Check(Level.OK, "bitcoin", "payments are off (payments = false): no Bitcoin Core needed")]
    settings = BitcoinSettings.from_config(config)
    timeout = aiohttp.ClientTimeout(total=RPC_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        rpc = _Rpc(settings, session)
        try:
            chain = await rpc("getblockchaininfo")
            network = await rpc("getnetworkinfo")
        except PasarError as exc:
            return [Check(Level.FAIL, "bitcoin", exc.message)]
        found = [_core(settings, chain, network), _sync(config, chain)]
        found += _clock(chain, network, time.time() if now is None else now, config.bitcoin_network)
        try:
            found.append(await _wallets(config, rpc))
        except PasarError as exc:
            found.append(Check(Level.FAIL, "bitcoin wallets", exc.message))
    return found


def _core(settings: BitcoinSettings, chain: dict[str, Any], network: dict[str, Any]) -> Check:
    name, version = str(chain.get("chain")), int(network.get("version", 0))
    wanted = settings.network
    if name not in CHAINS.get(wanted, {wanted}):
        return Check(
            Level.FAIL,
            "bitcoin",
            f"Core at {settings.url} runs the {name!r} chain but bitcoin_network is {wanted!r}: "
            f"point bitcoin_rpc_url at a {wanted} node or set bitcoin_network",
        )
    if version < MIN_CORE_VERSION:
        return Check(
            Level.FAIL, "bitcoin", f"Core {_version(version)} is too old: Pasar needs Bitcoin Core 26 or newer"
        )
    return Check(Level.OK, "bitcoin", f"Core {_version(version)} at {settings.url}, {name} chain")


def _version(number: int) -> str:
    return f"{number // 10000}.{number // 100 % 100}"


def _sync(config: Config, chain: dict[str, Any]) -> Check:
    blocks, headers = int(chain.get("blocks", 0)), int(chain.get("headers", 0))
    if chain.get("initialblockdownload") and config.bitcoin_network != "regtest":
        progress = float(chain.get("verificationprogress", 0)) * 100
        return Check(
            Level.FAIL,
            "bitcoin sync",
            f"Core is still syncing ({progress:.1f}%, block {blocks} of {headers}): payments are seen once it is done",
        )
    return Check(Level.OK, "bitcoin sync", f"at block {blocks}")


def _clock(chain: dict[str, Any], network: dict[str, Any], now: float, net: str) -> list[Check]:
    offset = int(network.get("timeoffset", 0))
    if abs(offset) > CLOCK_SKEW:
        way = "behind" if offset > 0 else "ahead of"
        return [
            Check(Level.FAIL, "clock (bitcoin)", f"this clock is {duration(abs(offset))} {way} Core's peers: {_NTP}")
        ]
    tip = int(chain.get("time") or chain.get("mediantime") or 0)
    if tip and tip - now > FUTURE_BLOCK:
        return [
            Check(Level.FAIL, "clock (bitcoin)", f"Core's latest block is dated {duration(tip - now)} ahead: {_NTP}")
        ]
    if tip and net != "regtest" and now - tip > STALE_TIP and not chain.get("initialblockdownload"):
        return [
            Check(
                Level.WARN,
                "clock (bitcoin)",
                f"Core's latest block is {duration(now - tip)} old: is Core connected to its peers? "
                f"(or this clock runs ahead: {_NTP})",
            )
        ]
    return [Check(Level.OK, "clock (bitcoin)", f"within {duration(abs(offset))} of Core's peers")]


_NTP = "keep the clock in sync (e.g. `timedatectl set-ntp true`, or install systemd-timesyncd or chrony)"


async def _wallets(config: Config, rpc: _Rpc) -> Check:
    loaded = [str(w) for w in await rpc("listwallets")]
    on_disk = sorted(str(w["name"]) for w in (await rpc("listwalletdir"))["wallets"])
    watch = _watch_wallet(config.data_dir)
    signing = config.bitcoin_wallet
    if signing and signing not in on_disk:
        return Check(
            Level.FAIL,
            "bitcoin wallets",
            f"Core has no wallet {signing!r}: create it (bitcoin-cli createwallet {signing}) or set bitcoin_wallet",
        )
    if not signing:
        others = [w for w in on_disk if w != watch]
        if len(others) != 1:
            what = f"several wallets ({', '.join(others)})" if others else "no wallet"
            return Check(
                Level.FAIL, "bitcoin wallets", f"bitcoin_wallet is empty and Core has {what}: set bitcoin_wallet"
            )
        signing = others[0]
    state = "loaded" if signing in loaded else "on disk (the node loads it at start)"
    detail = f"signing wallet {signing!r} {state}"
    if watch:
        detail += f"; watch-only wallet {watch!r} " + (
            "loaded" if watch in loaded else "on disk" if watch in on_disk else "made at the node's next start"
        )
    return Check(Level.OK, "bitcoin wallets", detail)


def _watch_wallet(data_dir: Path) -> str | None:
    try:
        seed = (data_dir / "node.key").read_bytes()
    except OSError:
        return None
    return watch_wallet_name(StoreKey(seed).onion) if len(seed) == 32 else None
