"""Whether checkout is open and what each moderator offers, as pages read them: from memory.

A listing page must not wait on Bitcoin Core or on a moderator's node over
tor: a hung Core or a slow circuit would stall every page and fill the
thread pool. So both answers are kept here, refreshed in the background by
the payment loop (``refresh``), and a page that finds nothing fresh starts
(or joins) one shared refresh and waits for it at most ``PAGE_WAIT`` seconds,
then uses what it last knew.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..core.errors import NotFound, PasarError, WalletError
from ..core.models import ModeratorTermsRecord, Profile
from .flows import Ctx
from .models import ModeratorOffer

log = logging.getLogger(__name__)
T = TypeVar("T")

PAGE_WAIT = 2.0  # seconds a page waits for a refresh it started or joined
OFFER_WAIT = 30.0  # seconds one moderator's offer may take over tor
FAILED_OFFER_TTL = 60  # seconds a moderator that did not answer stays off the form before it is asked again
STARTING = "payments are paused: the store is still checking its Bitcoin Core; try again in a moment"
_CHAINS = {"main": {"main"}, "test": {"test", "testnet4"}, "signet": {"signet"}, "regtest": {"regtest"}}

Answer = tuple[ModeratorOffer | None, bool]  # (the enabled offer or None, whether the moderator's node answered)


def terms_record(offer: ModeratorOffer) -> ModeratorTermsRecord:
    """A moderator's offer as the store's catalog publishes it."""
    return ModeratorTermsRecord(
        onion=offer.onion, fee_percent=offer.fee_percent, fee_sat=offer.fee_sat, terms=offer.terms
    )


def merged_terms(profile: Profile, answers: dict[str, Answer]) -> list[ModeratorTermsRecord]:
    """The store's published terms after fresh ``answers``: a moderator that answered gets its offer's terms (or
    none when it offers no moderation); one that did not answer keeps what was published."""
    old = {t["onion"]: t for t in profile.get("moderator_terms", [])}
    out: list[ModeratorTermsRecord] = []
    for onion in profile["moderators"]:
        offer, answered = answers.get(onion, (None, False))
        if offer is not None:
            out.append(terms_record(offer))
        elif not answered and onion in old:
            out.append(old[onion])
    return out


class _Shared:
    """One refresh at a time per key; callers join the running one."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task[object]] = {}

    def start(self, key: str, make: Callable[[], Awaitable[object]]) -> asyncio.Task[object]:
        task = self._running.get(key)
        if task is None or task.done():

            async def run() -> object:
                return await make()

            task = self._running[key] = asyncio.create_task(run(), name=f"payments-refresh-{key[:24]}")
        return task

    async def wait(self, task: asyncio.Task[object], seconds: float) -> bool:
        """Whether ``task`` finished within ``seconds`` (it goes on either way)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), seconds)
        return task.done()

    def cancel(self) -> None:
        for task in self._running.values():
            task.cancel()


class Readiness:
    def __init__(self, ctx: Ctx, *, status_ttl: int, offer_ttl: int) -> None:
        self._ctx = ctx
        self._status_ttl, self._offer_ttl = status_ttl, offer_ttl
        self._status: tuple[int, str | None] | None = None  # (checked at, reason)
        self._offers: dict[str, tuple[int, Answer]] = {}  # onion -> (fresh until, answer)
        self._shared = _Shared()

    # -- Bitcoin Core ------------------------------------------------------------------------------
    async def check_status(self) -> str | None:
        """Ask Core now (one RPC); None = checkout open, else the reason a buyer reads."""
        bitcoin, network = self._ctx.bitcoin, self._ctx.settings.network
        reason: str | None = None
        if bitcoin is None:
            reason = "payments are paused: this node has no Bitcoin Core configured"
        else:
            try:
                chain = await bitcoin.chain()
                if chain not in _CHAINS.get(network, {network}):
                    reason = f"payments are paused: Bitcoin Core runs {chain}, this node is set to {network}"
            except WalletError as exc:
                log.warning("payments paused: %s", exc.message)
                reason = "payments are paused: the store's Bitcoin Core is not reachable right now; try again later"
        self._status = (self._ctx.now(), reason)
        return reason

    async def paused(self) -> str | None:
        """The last answer if fresh; else a shared refresh, waited for at most ``PAGE_WAIT`` seconds."""
        known = self._status
        if known is not None and self._ctx.now() - known[0] < self._status_ttl:
            return known[1]
        task = self._shared.start("status", self.check_status)
        if await self._shared.wait(task, PAGE_WAIT) and self._status is not None:
            return self._status[1]
        return known[1] if known is not None else STARTING

    def seen_down(self) -> str | None:
        """The reason Core was just seen down (within the status TTL), else None: no RPC is made."""
        known = self._status
        if known is not None and known[1] is not None and self._ctx.now() - known[0] < self._status_ttl:
            return known[1]
        return None

    # -- moderators' offers ------------------------------------------------------------------------
    async def fetch_offer(self, onion: str) -> Answer:
        """Ask the moderator's node now (over tor) and remember the answer."""
        now = self._ctx.now()
        try:
            offer: ModeratorOffer | None = await asyncio.wait_for(self._ctx.moderation.offer(onion), OFFER_WAIT)
        except NotFound as exc:  # it answered: it offers no moderation (any more)
            log.info("moderator %s: %s", onion, exc.message)
            offer = None
        except (PasarError, TimeoutError) as exc:
            log.info("moderator %s: no offer (%s)", onion, getattr(exc, "message", "no answer in time"))
            self._offers[onion] = (now + FAILED_OFFER_TTL, (None, False))
            return None, False
        if offer is not None and not offer.enabled:
            offer = None
        self._offers[onion] = (now + self._offer_ttl, (offer, True))
        return offer, True

    def cached(self, onion: str) -> Answer | None:
        """The last answer, fresh or not (None: never asked)."""
        entry = self._offers.get(onion)
        return entry[1] if entry is not None else None

    def stale(self, onion: str) -> bool:
        entry = self._offers.get(onion)
        return entry is None or self._ctx.now() >= entry[0]

    async def answer(self, onion: str, *, wait: float = PAGE_WAIT) -> Answer:
        """A fresh answer from memory, else a shared fetch waited for at most ``wait`` seconds, else the last
        answer (or "did not answer yet")."""
        if not self.stale(onion):
            return self._offers[onion][1]
        task = self._shared.start("offer:" + onion, lambda: self.fetch_offer(onion))
        await self._shared.wait(task, wait)
        return self.cached(onion) or (None, False)

    def failed(self, onion: str) -> None:
        """The moderator did not take an order just now: off the form until it is asked again."""
        self._offers[onion] = (self._ctx.now() + FAILED_OFFER_TTL, (None, False))

    def forget(self, onion: str) -> None:
        self._offers.pop(onion, None)

    def close(self) -> None:
        self._shared.cancel()
