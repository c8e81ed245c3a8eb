"""The chain check of a review's escrow outpoint, through the operator's Bitcoin Core (``discovery.ReviewChecker``).

"checked": the block the review names holds the transaction, and its output
``vout`` pays the review's escrow address (a P2WSH address of this node's
network, as every Pasar escrow is). "failed: <why>" otherwise. "unchecked"
when there is no Core or it cannot be asked now (the directory asks again
later). ``getrawtransaction txid true block`` needs no transaction index:
the block hash says where to look.
"""

from __future__ import annotations

import logging

from ..core import ports
from ..core.errors import Unavailable, ValidationError
from ..core.reviews import Review
from . import escrow

log = logging.getLogger(__name__)

CHECKED = "checked"
UNCHECKED = "unchecked"
_P2WSH_LEN = 34  # OP_0 <32-byte script hash>


class ChainReviewChecker:
    def __init__(self, bitcoin: ports.Bitcoin | None, network: str) -> None:
        self._bitcoin = bitcoin
        self._network = network

    def attach(self, bitcoin: ports.Bitcoin | None) -> None:
        """Late wiring: Bitcoin Core once it is ready (None again when it goes)."""
        self._bitcoin = bitcoin

    def _escrow_address(self, address: str) -> str:
        """The canonical form of the review's escrow address; ValidationError (the reason) when it is none."""
        try:
            canonical = escrow.parse_address(address, self._network, field="address")
        except ValidationError as exc:
            raise ValidationError({"address": f"not a {self._network} Bitcoin address"}) from exc
        script = escrow.script_pubkey(canonical)
        if len(script) != _P2WSH_LEN or script[:2] != b"\x00\x20":
            raise ValidationError({"address": "not an escrow (P2WSH) address"})
        return canonical

    async def check(self, review: Review) -> str:
        try:
            expected = self._escrow_address(review.address)
        except ValidationError as exc:
            return f"failed: the review's escrow address is {exc.fields['address']}"
        if self._bitcoin is None:
            return UNCHECKED
        try:
            found = await self._bitcoin.output_at(review.txid, review.vout, review.block)
        except Unavailable as exc:  # Core is down or refused: tell later
            log.info("review check of %s: %s", review.outpoint, exc.message)
            return UNCHECKED
        if found is None:
            return f"failed: block {review.block} has no output {review.outpoint}"
        address, sats = found
        if address != expected:
            return "failed: the outpoint pays another address than the review's escrow"
        if sats <= 0:
            return "failed: the outpoint pays nothing"
        return CHECKED
