"""A store's own escrow terms (timeout N, accept window) and its moderators' published fee and terms.

Real regtest bitcoind, the real ``ModeratorService`` reached through the real
``ModeratorClient`` (tests/integration/escrow_world.py), a real Market on
TinyDB: the store's N goes into the escrow both Core and the moderator check,
its window into ``accept_by``, and the moderators' offers into the signed
catalog, rewritten only when they change.
"""

from __future__ import annotations

import json

from node.core.addresses import address_from_pubkey
from node.core.models import Profile
from node.payments.checkout import ACCEPT_WINDOW
from node.payments.models import OrderState
from tests.integration.escrow_world import AMOUNT, World

S = OrderState


async def published(w: World) -> tuple[int, Profile]:
    """The store's catalog seq and the profile its signed catalog carries."""
    snap = await w.market.snapshot(w.store_onion)
    body = json.loads(snap.envelope_bytes)["body"]
    return snap.seq, body["profile"]


async def test_the_stores_timeout_and_window_are_used_at_checkout(world: World) -> None:
    w, p = world, world.payments()
    await w.market.update_profile(w.store_onion, {"escrow_timeout_blocks": 150, "accept_window": 7200})
    options = await p.checkout_options(w.store_onion)
    assert (options.timeout_blocks, options.accept_window) == (150, 7200)
    _, profile = await published(w)
    assert (profile.get("escrow_timeout_blocks"), profile.get("accept_window")) == (150, 7200)

    order, token = await p.checkout(w.store_onion, w.form())
    assert order.escrow.timeout_blocks == 150 and "older(150)" in order.escrow.descriptor
    assert order.extra[ACCEPT_WINDOW] == "7200"
    # Later changes of the store's terms do not touch placed orders.
    await w.market.update_profile(w.store_onion, {"escrow_timeout_blocks": 300, "accept_window": None})
    options = await p.checkout_options(w.store_onion)
    assert (options.timeout_blocks, options.accept_window) == (300, w.settings.accept_window)
    _, profile = await published(w)  # cleared: null in the catalog, the node's setting
    assert (profile.get("escrow_timeout_blocks"), profile.get("accept_window", "absent")) == (300, None)

    w.pay(order.escrow.address, AMOUNT)
    w.clock.t += 10
    await p.watch_once()
    order = await p.order(order.id)
    assert order.state is S.FUNDED and order.accept_by == w.clock.t + 7200
    assert order.escrow.timeout_blocks == 150
    w.regtest.mine(1)
    await p.watch_once()
    await w.moderator.watch_once()  # the moderator times the refund window from when it sees the escrow funded
    w.clock.t = order.accept_by - 1
    await p.watch_once()
    assert (await p.order(order.id)).state is S.CONFIRMED  # still the vendor's time
    w.clock.t = order.accept_by + 1
    await p.watch_once()  # the moderator co-signs the refund only after the store's window
    refunding = await p.order(order.id)
    assert refunding.state is S.REFUNDING, refunding.history
    assert (await p.by_token(w.store_onion, token)).id == order.id


async def test_without_store_terms_the_nodes_settings_apply(world: World) -> None:
    w, p = world, world.payments()
    profile = (await w.market.store(w.store_onion))["profile"]
    assert "escrow_timeout_blocks" not in profile and "accept_window" not in profile  # as older profiles
    options = await p.checkout_options(w.store_onion)
    assert (options.timeout_blocks, options.accept_window) == (w.settings.timeout_blocks, w.settings.accept_window)
    order, _ = await p.checkout(w.store_onion, w.form())
    assert order.escrow.timeout_blocks == w.settings.timeout_blocks
    assert order.extra[ACCEPT_WINDOW] == str(w.settings.accept_window)


async def test_catalog_names_the_moderators_terms_and_is_rewritten_only_when_they_change(world: World) -> None:
    w, p = world, world.payments()
    onion = w.moderator.onion
    seq, profile = await published(w)
    assert "moderator_terms" not in profile
    await p.refresh()  # the payment loop asks the moderators: the terms are published
    seq, profile = await published(w)
    terms = {"onion": onion, "fee_percent": 2, "fee_sat": 1000, "terms": "I read both sides."}
    assert profile.get("moderator_terms") == [terms]

    w.clock.t += p.settings.offer_ttl + 1  # asked again: the same terms, no new catalog
    await p.refresh()
    assert (await published(w))[0] == seq

    await w.moderator.set_offer({"fee_percent": 3, "terms": "Both sides, within a week."})
    w.clock.t += p.settings.offer_ttl + 1
    await p.refresh()
    options = await p.checkout_options(w.store_onion)
    assert [m.fee_percent for m in options.moderators] == [3]
    new_seq, profile = await published(w)
    assert new_seq > seq
    assert profile.get("moderator_terms") == [{**terms, "fee_percent": 3, "terms": "Both sides, within a week."}]

    w.http.offline = True  # unreachable: not offered at checkout, its published terms stay
    w.clock.t += p.settings.offer_ttl + 1
    await p.refresh()
    assert (await p.checkout_options(w.store_onion)).moderators == []
    assert (await published(w)) == (new_seq, profile)

    w.http.offline = False
    await w.moderator.set_offer({"enabled": False})  # it answers that it offers no moderation: terms go
    w.clock.t += p.settings.offer_ttl + 1
    await p.refresh()
    _, profile = await published(w)
    assert profile.get("moderator_terms") == [] and profile["moderators"] == [onion]


async def test_moderator_terms_asked_now_with_warnings(world: World) -> None:
    w, p = world, world.payments()
    onion = w.moderator.onion
    stranger = address_from_pubkey(bytes(32))
    records, warnings = await p.moderator_terms([onion])
    assert records == [{"onion": onion, "fee_percent": 2, "fee_sat": 1000, "terms": "I read both sides."}]
    assert warnings == []

    w.http.offline = True
    records2, warnings = await p.moderator_terms([onion, stranger], records)
    assert records2 == records  # unreachable: what was published stays
    assert len(warnings) == 2 and all("did not answer" in x for x in warnings)
    records3, warnings = await p.moderator_terms([onion])
    assert records3 == [] and "listed without fee and terms" in warnings[0]

    w.http.offline = False
    await w.moderator.set_offer({"enabled": False})
    records4, warnings = await p.moderator_terms([onion], records)
    assert records4 == [] and "offers no moderation" in warnings[0]
