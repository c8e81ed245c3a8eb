"""The start-up pass that gives the watch-only wallet back every open escrow's descriptor.

After ``pasar restore`` (or when Bitcoin Core's wallets were swapped: a new
watch-only wallet name, a Core restored without its wallets) the node's
watch-only wallet may lack the descriptors of its open escrows. It would then
see no coins at their addresses, and the payment watcher would take a funded
order for an expired or an emptied one. So at start, before the watchers run,
this pass asks Core which descriptors the wallet holds and imports the missing
ones with ``timestamp`` = when the order (purchase, case) was created: Core
rescans the blocks from then and finds the funding. Only what the watchers read
is imported (``watcher.watched_orders``, active moderation cases, open
purchases), in batches newest first, and the pass returns only once Core's
rescan is over (``getwalletinfo`` "scanning"): Core lists an imported descriptor
at once, but its coins only when the rescan has reached their blocks.

``rewatch_until_done`` retries (capped backoff, logged once per outage) while
Core is down or a source is not open yet; it returns once every source's
escrows are watched. The app runs it as a task, off the start-up path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from ..core import ports
from ..core.errors import PasarError
from .models import Escrow, Order
from .moderation_store import Case

log = logging.getLogger(__name__)
FIRST_RETRY, MAX_RETRY = 0.5, 10.0  # seconds between tries while Core is down or a source is not ready
POLL_FIRST, POLL_CAP = 0.2, 5.0  # seconds between looks at Core's rescan
LOG_EVERY = 60.0  # seconds between two "still rescanning" lines
BATCH = 100  # descriptors per importdescriptors (newest first)


@dataclass(frozen=True)
class Watched:
    """One escrow to watch: its descriptor (with checksum) and when its record was created (unix time)."""

    descriptor: str
    since: int


Source = Callable[[], Awaitable[Sequence[Watched]]]


def watched(escrow: Escrow | None, created_at: int) -> list[Watched]:
    return [] if escrow is None else [Watched(escrow.descriptor, created_at)]


def of_orders(orders: Iterable[Order]) -> list[Watched]:
    return [w for o in orders for w in watched(o.escrow, o.created_at)]


def of_cases(cases: Iterable[Case]) -> list[Watched]:
    return [w for c in cases for w in watched(c.escrow, c.created_at)]


async def wait_for_rescan(bitcoin: ports.Bitcoin, *, first: float = POLL_FIRST, cap: float = POLL_CAP) -> None:
    """Until Core's rescan of the watch-only wallet is over (``getwalletinfo`` "scanning" false): the wallet
    lists an imported descriptor at once but its coins only once the rescan reached their blocks. Logged once
    per ``LOG_EVERY`` seconds at most."""
    loop = asyncio.get_running_loop()
    told_at: float | None = None
    delay = first
    while (progress := await bitcoin.rescan_progress()) is not None:
        if told_at is None or loop.time() - told_at >= LOG_EVERY:
            log.info(
                "Bitcoin Core is rescanning the blocks for the watch-only wallet's escrows (%d%% done); "
                "the payment watchers start once it is done",
                int(progress * 100),
            )
            told_at = loop.time()
        await asyncio.sleep(delay)
        delay = min(delay * 2, cap)
    if told_at is not None:
        log.info("Bitcoin Core's rescan of the watch-only wallet is done")


async def rewatch_once(bitcoin: ports.Bitcoin, sources: Sequence[Source], *, poll: float = POLL_FIRST) -> list[str]:
    """Every source's escrows the watch-only wallet lacks, imported in batches of ``BATCH``, newest first (one old
    record rescans from long ago: the newer ones are in before it), each batch's rescan waited for; the
    descriptors imported. A rescan already running (a restart during one) is waited for first.

    Raises the first source's or Core's ``PasarError`` (the batches imported before it stay imported).
    """
    escrows: dict[str, int] = {}
    for source in sources:
        for w in await source():
            escrows[w.descriptor] = min(escrows.get(w.descriptor, w.since), w.since)
    if not escrows:
        return []
    await wait_for_rescan(bitcoin, first=poll)
    newest = sorted(escrows.items(), key=lambda e: (-e[1], e[0]))
    imported: list[str] = []
    for start in range(0, len(newest), BATCH):
        batch = await bitcoin.rewatch(newest[start : start + BATCH])
        if batch:
            log.info(
                "the watch-only wallet lacked %d escrow descriptor(s) (restored node or new wallet): imported them, "
                "Bitcoin Core rescans from the oldest one's time",
                len(batch),
            )
        await wait_for_rescan(bitcoin, first=poll)
        imported += batch
    return imported


async def rewatch_until_done(
    bitcoin: ports.Bitcoin, sources: Sequence[Source], *, first: float = FIRST_RETRY, cap: float = MAX_RETRY
) -> list[str]:
    """``rewatch_once`` until it succeeds (Core down, or a source not open yet: tried again later); it returns
    once Core's rescan is over, so the watchers read a wallet that knows every escrow's coins."""
    delay, told = first, False
    while True:
        try:
            return await rewatch_once(bitcoin, sources, poll=min(first, POLL_FIRST))
        except PasarError as exc:
            if not told:
                log.warning("escrow descriptors not checked in the watch-only wallet yet (%s); retrying", exc.message)
            told = True
        await asyncio.sleep(delay)
        delay = min(delay * 2, cap)
