"""Escrow descriptors into the node's watch-only wallet (``importdescriptors``), for ``BitcoinCore``.

Core refuses a second import into a wallet while one rescans, so checkouts' imports go one at a time (a lock),
and one that meets another process's short rescan waits for it, bounded by ``SLOW_TIMEOUT``. The start-up
re-watch's import may rescan for hours (a restored node's old escrows): it holds no lock, and while it (or a
rescan still running from before a restart) goes on, ``watch`` defers its import: ``rescan_progress`` makes the
deferred imports once Core's rescan is over (the watchers wait for that before their first round).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..core.errors import WalletError
from .bitcoin_codec import RPC_WALLET_ERROR, RpcError

log = logging.getLogger(__name__)
SLOW_TIMEOUT = 120.0  # importdescriptors rescans from "now" (two hours back)
RESCAN_RETRY = 0.1  # seconds between tries while another process's import rescans
WalletRpc = Callable[..., Awaitable[Any]]  # (wallet, method, *params, timeout=...)


def _bare(descriptor: str) -> str:
    """A descriptor without its checksum, hardened steps as ``h`` (how Core may print it back)."""
    return descriptor.split("#", 1)[0].replace("'", "h").strip()


def _busy(exc: RpcError) -> bool:
    return exc.rpc_code == RPC_WALLET_ERROR and "rescanning" in exc.core_message


class WatchImports:
    """``watch``, ``rewatch`` and ``rescan_progress`` of ``ports.Bitcoin``, through the adapter's wallet RPC."""

    def __init__(self, wallet_rpc: WalletRpc, with_checksum: Callable[[str], Awaitable[str]], wallet: str) -> None:
        self._wallet_rpc = wallet_rpc
        self._with_checksum = with_checksum
        self._watch = wallet
        self._importing = asyncio.Lock()  # Core refuses a second import while one rescans
        self._long_rescan = False  # the re-watch's rescan runs (or one from before a restart): ``watch`` defers
        self._deferred: dict[str, int] = {}  # descriptor -> timestamp, imported once the rescan is over

    async def watch(self, descriptor: str, since: int | None = None) -> None:
        stamp = int(time.time()) if since is None else max(0, since)  # deferred: rescan from the call's time
        if self._long_rescan:
            self._deferred[descriptor] = min(self._deferred.get(descriptor, stamp), stamp)
            return
        now: dict[str, int | str] = {descriptor: "now" if since is None else stamp}
        async with self._importing:
            answers = await self._import(await self._request(now), defer=True)
        if answers is None:  # a long rescan began meanwhile
            self._deferred[descriptor] = min(self._deferred.get(descriptor, stamp), stamp)
            return
        failed = self._failed(now, answers)
        if failed:
            raise WalletError(f"Bitcoin Core could not watch the escrow descriptor: {failed[descriptor]}")

    async def rewatch(self, escrows: Sequence[tuple[str, int]]) -> list[str]:
        """As ``ports.Bitcoin``: one ``listdescriptors``, then one ``importdescriptors`` of what is missing (one Core
        refuses is logged and left out: the others' watchers must not wait on it). A call Core does not answer in
        time while it rescans counts as imported: ``rescan_progress`` tells when Core is done."""
        held = await self._wallet_rpc(self._watch, "listdescriptors") if escrows else {}
        have = {_bare(str(d["desc"])) for d in held.get("descriptors", [])}
        missing = {d: max(0, t) for d, t in sorted(escrows, key=lambda e: -e[1]) if _bare(d) not in have}
        if not missing:  # the earliest time of a descriptor listed twice wins (sorted)
            return []
        request = await self._request(missing)
        self._long_rescan = True  # checkouts' ``watch`` defers instead of waiting on this import
        try:
            answers = await self._import(request, defer=False)
        except RpcError:
            self._long_rescan = False
            raise
        except WalletError:  # no answer in time: Core goes on rescanning for it (or is down: raised)
            if await self.rescan_progress() is None:
                raise
            return list(missing)
        failed = self._failed(missing, answers or [])
        for descriptor, problem in failed.items():
            log.error("Bitcoin Core refuses to watch escrow %s again: %s", descriptor, problem)
        return [d for d in missing if d not in failed]

    async def rescan_progress(self) -> float | None:
        """As ``ports.Bitcoin``: the watch-only wallet's ``getwalletinfo`` "scanning"; once it is over, the imports
        ``watch`` deferred are made (a failure raises: they stay deferred for the next call)."""
        info = await self._wallet_rpc(self._watch, "getwalletinfo")
        scanning = info.get("scanning")
        if isinstance(scanning, dict):
            self._long_rescan = True
            return float(scanning.get("progress", 0.0))
        self._long_rescan = True  # the deferred imports below are made first
        while self._deferred:
            stamps = dict(self._deferred)
            answers = await self._import(await self._request(stamps), defer=False)
            for descriptor in stamps:
                self._deferred.pop(descriptor, None)
            for descriptor, problem in self._failed(stamps, answers or []).items():
                log.error("Bitcoin Core refuses to watch the escrow %s of a checkout: %s", descriptor, problem)
        self._long_rescan = False
        return None

    async def _request(self, stamps: Mapping[str, int | str]) -> list[dict[str, object]]:
        return [
            {"desc": await self._with_checksum(d), "timestamp": t, "label": "pasar escrow"} for d, t in stamps.items()
        ]

    @staticmethod
    def _failed(stamps: Mapping[str, int | str], answers: Sequence[Any]) -> dict[str, str]:
        """The descriptors Core refused (or did not answer for), with its message."""
        result = list(answers) + [{"error": {"message": "no answer"}}] * (len(stamps) - len(answers))
        pairs = zip(stamps, result, strict=False)
        return {d: str((r.get("error") or {}).get("message", "?")) for d, r in pairs if not r.get("success")}

    async def _import(self, request: Sequence[Mapping[str, object]], *, defer: bool) -> list[Any] | None:
        """``importdescriptors``, waiting (bounded) while another import into the same wallet rescans; None when
        ``defer`` and a long rescan is known to run (the caller defers the import)."""
        deadline = asyncio.get_running_loop().time() + SLOW_TIMEOUT
        while True:
            if defer and self._long_rescan:
                return None
            try:
                return list(
                    await self._wallet_rpc(self._watch, "importdescriptors", request, timeout=SLOW_TIMEOUT) or []
                )
            except RpcError as exc:
                if not _busy(exc) or asyncio.get_running_loop().time() > deadline:
                    raise
            await asyncio.sleep(RESCAN_RETRY)
