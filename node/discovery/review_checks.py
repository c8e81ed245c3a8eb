"""The directory's background check of reviews' escrow outpoints on chain.

A review names the escrow funding outpoint, the block that confirmed it and
the escrow address. A ``ReviewChecker`` (``payments.review_check``, through
the operator's Bitcoin Core) says "checked" when that block holds the
outpoint and it pays that address, "failed: <why>" when it does not, and
"unchecked" when it cannot tell (no Core, Core unreachable). The loop checks
a bounded number per round; "unchecked" ones are tried again after
``recheck_after`` seconds. A failed review stays visible with its mark and
counts in neither the rating nor the "omits reviews" flag.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from ..core.errors import PasarError
from ..core.reviews import Review
from .directory import Directory
from .review_index import UNCHECKED

log = logging.getLogger(__name__)


class ReviewChecker(Protocol):
    async def check(self, review: Review) -> str:
        """ "checked" | "unchecked" | "failed: <why>" for the review's escrow outpoint."""


class NoChain:
    """The checker of a node without Bitcoin Core: every review stays "unchecked"."""

    async def check(self, review: Review) -> str:
        return UNCHECKED


class ReviewChecks:
    def __init__(
        self,
        directory: Directory,
        checker: ReviewChecker,
        *,
        per_round: int = 20,
        interval: float = 60.0,
        recheck_after: int = 86400,
    ) -> None:
        self._directory = directory
        self._checker = checker
        self._per_round = per_round
        self._interval = interval
        self._recheck_after = recheck_after

    async def check_once(self) -> int:
        """Check up to ``per_round`` due reviews; returns how many were looked at."""
        due = await self._directory.due_checks(limit=self._per_round, recheck_after=self._recheck_after)
        for review in due:
            try:
                result = await self._checker.check(review)
            except PasarError as exc:  # the checker could not tell: try again later
                log.info("review %s: chain check not possible now: %s", review.signer, exc.message)
                result = UNCHECKED
            await self._directory.set_chain(review, result)
        return len(due)

    async def run(self) -> None:
        """Forever: a round, then the interval (at once again while a full round was due)."""
        while True:
            checked = await self.check_once()
            await asyncio.sleep(0 if checked >= self._per_round else self._interval)
