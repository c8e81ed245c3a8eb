"""The announcer of own stores (node/discovery/service.py) with a real market, storage and gossip."""

from __future__ import annotations

import pytest

from node.adapters import dbfiles
from node.adapters.store import Storage
from node.discovery import announce
from node.discovery.service import Announcer
from node.market.market import Market

from .test_gossip_kit import Clock, Net, open_node
from .test_market import limits


@pytest.fixture
async def world(tmp_path):
    dbfiles.initialise(tmp_path)
    storage = Storage(tmp_path)
    await storage.open()
    clock = Clock()
    market = Market(storage, limits(tmp_path, store_port_base=0), clock=clock)
    opened: list = []
    gossip = await open_node(tmp_path, Net(), 1, clock=clock, opened=opened)
    yield market, gossip, clock
    for db in opened:
        await db.close()
    await storage.close()


async def test_stores_are_announced_once_reachable_and_never_while_invite_only(world):
    market, gossip, clock = world
    shown = await market.create_store({"name": "Open Shop"})
    hidden = await market.create_store({"name": "Friends Only"})
    await market.set_access(hidden["onion"], {"invite_only": True})
    reachable: set[str] = set()
    announcer = Announcer(market, gossip, ttl=86400, interval=60, clock=clock, ready=reachable.__contains__)
    await announcer.check()
    assert gossip.own_announcements() == {}  # nothing is reachable yet: nothing is announced
    reachable.update({shown["onion"], hidden["onion"]})
    await announcer.check()
    own = gossip.own_announcements()
    assert set(own) == {shown["onion"]}
    ann = own[shown["onion"]]
    assert ann.body["name"] == "Open Shop" and clock.t - 60 < ann.issued_at <= clock.t  # signed within the interval
    assert announce.verify(ann.raw, now=int(clock.t)) == ann  # a real signature by the store key


async def test_a_restart_takes_over_what_gossip_holds_and_withdraws_what_changed_meanwhile(world):
    market, gossip, clock = world
    a = (await market.create_store({"name": "Alpha"}))["onion"]
    b = (await market.create_store({"name": "Beta"}))["onion"]
    first = Announcer(market, gossip, ttl=86400, interval=60, clock=clock)
    await first.check()
    before = gossip.own_announcements()
    assert set(before) == {a, b}
    await market.set_access(b, {"announce": False})  # changed while the node was "stopped"
    clock.t += 30
    restarted = Announcer(market, gossip, ttl=86400, interval=60, clock=clock)
    await restarted.check()
    after = gossip.own_announcements()
    assert set(after) == {a}  # b withdrawn, although this announcer never made it
    assert after[a].seq == before[a].seq  # not re-signed: a restart does not give every store one new timestamp
    await market.update_profile(a, {"description": "now with tea"})
    await restarted.check()
    assert gossip.own_announcements()[a].seq > before[a].seq  # the catalog changed: announced again
