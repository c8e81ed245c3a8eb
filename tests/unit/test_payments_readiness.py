"""Pages read payment readiness from memory: a hung Core or a slow moderator never stalls a page.

Pure logic with small fakes (no Core, no tor): ``Readiness`` shares one refresh among callers and
answers within ``PAGE_WAIT``; the storefront shows buyers our own refusals but never the node's
internals; the order list is paged and its bounds are checked.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from node.core.errors import NotFound, StorageError, Unavailable, Unreachable, ValidationError, WalletError
from node.core.models import Sats
from node.operations import payments as P
from node.payments import readiness
from node.payments.flows import Ctx
from node.payments.models import ModeratorOffer
from node.payments.readiness import Readiness
from node.payments.settings import PaymentSettings
from node.web.checkout import PAUSED, buyer_text

ONION = "a" * 56


class HungCore:
    """A Core that accepts the call and never answers (until released)."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.chain_name = "regtest"

    async def chain(self) -> str:
        self.calls += 1
        await self.release.wait()
        return self.chain_name


class SlowModerators:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.enabled = True

    async def offer(self, onion: str) -> ModeratorOffer:
        self.calls += 1
        await self.release.wait()
        if not self.enabled:
            raise NotFound("this node does not offer moderation")
        return ModeratorOffer(onion, True, 2, Sats(1000), "terms")


def make(core: Any = None, moderators: Any = None, *, clock: list[int] | None = None) -> Readiness:
    now = clock if clock is not None else [1_800_000_000]
    ctx = Ctx(
        store=cast(Any, None),
        market=cast(Any, None),
        bitcoin=core,
        moderation=moderators or SlowModerators(),
        settings=PaymentSettings(network="regtest"),
        clock=lambda: now[0],
    )
    return Readiness(ctx, status_ttl=5, offer_ttl=600)


@pytest.fixture(autouse=True)
def quick_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readiness, "PAGE_WAIT", 0.2)


async def test_a_hung_core_does_not_stall_pages_and_is_asked_once() -> None:
    core = HungCore()
    ready = make(core)
    started = time.monotonic()
    answers = await asyncio.gather(*(ready.paused() for _ in range(8)))
    assert time.monotonic() - started < 5  # each page waited PAGE_WAIT at most, not for Core
    assert answers == [readiness.STARTING] * 8 and core.calls == 1  # one shared RPC for eight pages
    core.release.set()
    await asyncio.sleep(0.05)
    assert await ready.paused() is None and core.calls == 1  # the shared call's answer, fresh now
    ready.close()


async def test_a_wrong_chain_or_a_dead_core_pauses_checkout_with_a_plain_reason() -> None:
    core = HungCore()
    core.release.set()
    core.chain_name = "main"
    ready = make(core)
    assert "runs main" in (await ready.check_status() or "")

    class DeadCore:
        async def chain(self) -> str:
            raise WalletError("Bitcoin Core did not answer getblockchaininfo at http://core.lan.example:8332")

    dead = make(DeadCore())
    reason = await dead.check_status() or ""
    assert "not reachable" in reason and "core.lan.example" not in reason  # Core's address stays in the log
    assert dead.seen_down() == reason


async def test_a_slow_moderator_is_asked_once_and_pages_show_the_last_answer() -> None:
    moderators = SlowModerators()
    ready = make(moderators=moderators)
    assert await asyncio.gather(ready.answer(ONION), ready.answer(ONION)) == [(None, False)] * 2
    assert moderators.calls == 1
    moderators.release.set()
    await asyncio.sleep(0.05)
    offer, answered = await ready.answer(ONION)
    assert answered and offer is not None and offer.fee_percent == 2 and moderators.calls == 1
    ready.failed(ONION)  # it would not take an order just now: off the form until asked again
    assert ready.cached(ONION) == (None, False) and ready.stale(ONION) is False
    ready.forget(ONION)
    assert ready.cached(ONION) is None and ready.stale(ONION)


async def test_a_moderator_that_offers_nothing_answered() -> None:
    moderators = SlowModerators()
    moderators.release.set()
    moderators.enabled = False
    assert await make(moderators=moderators).fetch_offer(ONION) == (None, True)


def test_buyers_read_our_refusals_but_never_the_nodes_internals() -> None:
    assert buyer_text(WalletError("Bitcoin Core at http://core.lan.example:8332 refused our credentials")) == PAUSED
    assert buyer_text(StorageError("/home/shop/.local/share/pasar/orders.sqlite is closed")) == PAUSED
    own = Unavailable("this store has too many unpaid orders right now; please try again in a while")
    assert buyer_text(own) == own.message
    assert buyer_text(Unreachable("the moderator x.onion could not answer now")).startswith("the moderator")
    assert buyer_text(ValidationError({"qty": "only 2 left"}, "only 2 left")) == "only 2 left"


class _Orders:
    def __init__(self) -> None:
        self.asked: list[tuple[Any, ...]] = []

    async def orders(self, store: Any, state: Any, *, limit: int, offset: int) -> list[Any]:
        self.asked.append((store, state, limit, offset))
        return []


class _Ctx:
    def __init__(self) -> None:
        self.payments = _Orders()


async def test_the_order_list_is_paged_and_its_bounds_checked() -> None:
    ctx = _Ctx()
    await P.list_orders.call(cast(Any, ctx), P.OrderQuery())
    await P.list_orders.call(cast(Any, ctx), P.OrderQuery(limit="1000", offset="100"))
    assert ctx.payments.asked == [(None, None, 100, 0), (None, None, 1000, 100)]
    with pytest.raises(ValidationError) as caught:
        await P.list_orders.call(cast(Any, ctx), P.OrderQuery(limit="0", offset="-1"))
    assert set(caught.value.fields) == {"limit", "offset"}  # every problem at once
