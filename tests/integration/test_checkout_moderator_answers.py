"""Checkout against what the chosen moderator's node answers, with real Core wallets and a real moderator.

The buyer chose a moderator from the form's offers; the order is placed only on those terms, and a
moderator that will not take the order is taken off the form until it is asked again. Nothing is stored
in either case.
"""

from __future__ import annotations

import pytest

from node.core.errors import Conflict, Unreachable
from tests.integration.escrow_world import World


async def test_a_fee_change_after_the_page_was_shown_places_nothing(world: World) -> None:
    w, p = world, world.payments()
    shown = await p.checkout_options(w.store_onion)  # the buyer's page: the offer as it was
    assert [m.fee_percent for m in shown.moderators] == [(await w.moderator.offer()).fee_percent]
    await w.moderator.set_offer({"fee_percent": 9})
    with pytest.raises(Conflict, match="changed its fee or terms"):
        await p.checkout(w.store_onion, w.form())
    assert await p.orders() == []
    again = await p.checkout_options(w.store_onion)  # the next page asks again and shows the new fee
    assert [m.fee_percent for m in again.moderators] == [9]
    order, _ = await p.checkout(w.store_onion, w.form())
    assert order.moderator.fee_percent == 9


async def test_a_moderator_that_refuses_is_taken_off_the_form(world: World) -> None:
    w, p = world, world.payments()
    assert (await p.checkout_options(w.store_onion)).moderators
    await w.moderator.set_offer({"enabled": False})  # it answers, but takes no orders now
    with pytest.raises(Unreachable, match="cannot take this order now"):
        await p.checkout(w.store_onion, w.form())
    assert await p.orders() == []
    assert (await p.checkout_options(w.store_onion)).moderators == []  # not offered again at once
