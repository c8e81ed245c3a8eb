"""Long-running loops that never die silently.

``supervised(name, factory)`` runs ``factory()`` (a coroutine that is meant to
run until cancelled) and, whenever it raises, logs the exception with its
traceback, waits a capped exponential backoff with jitter and starts it again.
A loop that returns is started again too (it was meant to run forever). Only
cancellation stops it. Gossip, the crawler, payment watchers and outboxes all
run under it, as the onion publisher does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Delays between restarts: ``first * 2**n`` seconds, at most ``cap``, plus up to ``jitter`` of it."""

    first: float = 1.0
    cap: float = 60.0
    jitter: float = 0.25  # a fraction of the delay, so loops that failed together do not restart together
    stable_after: float = 300.0  # a run that lasted this long starts the delays over

    def delay(self, failures: int) -> float:
        base = min(self.cap, self.first * 2.0 ** max(0, failures - 1))
        return base + random.uniform(0, base * self.jitter)


BACKOFF = Backoff()


async def supervised(name: str, factory: Callable[[], Awaitable[None]], *, backoff: Backoff = BACKOFF) -> None:
    """Run ``factory()`` until cancelled, restarting it after every exception (logged with its traceback)."""
    failures = 0
    while True:
        started = time.monotonic()
        try:
            await factory()
        except asyncio.CancelledError:
            raise
        except Exception:
            failures = _count(failures, started, backoff)
            delay = backoff.delay(failures)
            log.exception("%s failed; restarting in %.1fs (failure %d)", name, delay, failures)
        else:
            failures = _count(failures, started, backoff)
            delay = backoff.delay(failures)
            log.error("%s stopped by itself; restarting in %.1fs", name, delay)
        await asyncio.sleep(delay)


def _count(failures: int, started: float, backoff: Backoff) -> int:
    """Failures in a row; a run that lasted ``stable_after`` seconds starts the count over."""
    return 1 if time.monotonic() - started >= backoff.stable_after else failures + 1
