"""Reviews in gossip: carried beside announcements keyed by signer, never crawled, handed to the directory.

Real nodes: ``Gossip`` on a real SQLiteDatabase, joined by the in-memory transport of test_gossip_kit.
"""

from __future__ import annotations

import json

import pytest

from node.core.crypto import StoreKey
from node.core.errors import SignatureError, ValidationError
from node.discovery.gossip import GossipLimits
from node.discovery.gossip_items import ReviewRoom
from node.discovery.gossip_state import Held
from node.discovery.service import Discovery
from tests.unit.review_helpers import make, shop

from .test_gossip_kit import NOW, Clock, Net, make_ann, node_onion, open_node, push_message, raw_items


class Sink:
    def __init__(self):
        self.got = []

    async def __call__(self, reviews):
        self.got.extend(reviews)
        return len(reviews)


@pytest.fixture
async def world(tmp_path):
    opened = []

    class World:
        def __init__(self):
            self.net = Net()
            self.clock = Clock()

        async def node(self, i, **kwargs):
            return await open_node(tmp_path, self.net, i, clock=self.clock, opened=opened, **kwargs)

    yield World()
    for db in opened:
        await db.close()


def review_of(store=None, **kw):
    return make(store or shop(), **kw)


async def test_pushed_reviews_are_kept_by_signer_and_go_to_the_sink_not_to_the_crawler(world):
    sink = Sink()
    node = await world.node(1, on_reviews=sink)
    r1, r2 = review_of(), review_of()
    forged = r1.envelope()
    forged["body"]["rating"] = 1
    ann = make_ann(3)
    await node.handle(push_message([r1.envelope(), r2.envelope(), forged, *raw_items([ann])]))
    assert set(node.held) == {r1.signer, r2.signer, ann.store}
    assert node.served.accepted == 3 and node.served.rejected == 1
    assert sorted(r.signer for r in sink.got) == sorted([r1.signer, r2.signer])
    assert [a.store for a in await node.announcements()] == [ann.store]  # what the crawler reads
    assert await node.announcement(r1.signer) is None
    # A replay adds nothing and the directory hears nothing new.
    await node.handle(push_message([r1.envelope()]))
    assert len(sink.got) == 2 and node.served.duplicates == 1


async def test_a_higher_seq_replaces_a_review(world):
    sink = Sink()
    node = await world.node(1, on_reviews=sink)
    key, store = StoreKey.generate(), shop()
    await node.handle(push_message([make(store, key=key, seq=2, text="second").envelope()]))
    await node.handle(push_message([make(store, key=key, seq=1, text="first").envelope()]))
    await node.handle(push_message([make(store, key=key, seq=3, text="third").envelope()]))
    assert [r.text for r in sink.got] == ["second", "third"]
    assert node.held[key.onion].seq == 3 and node.held[key.onion].subject == store


async def test_own_review_is_stemmed_alone_then_travels_like_any_other(world):
    sink_a, sink_b = Sink(), Sink()
    await world.node(1, on_reviews=sink_a)
    b = await world.node(2, on_reviews=sink_b)
    review = review_of()
    await b.publish_review(review.raw)
    assert [r.signer for r in sink_b.got] == [review.signer]  # its own directory shows it at once
    assert review.signer not in b.held  # held only once it comes back from a peer (the stem rule)
    await b.add_peer(node_onion(1))
    world.clock.t += 60  # past the random stem delay (0..gossip_interval)
    await b.round()
    assert [r.raw for r in sink_a.got] == [review.raw]
    (stem,) = [json.loads(m) for m in world.net.alone]
    assert stem["from"] is None and stem["peers"] == [] and [i["type"] for i in stem["push"]] == ["pasar.review"]
    world.clock.t += 60
    await b.round()  # b pulls a's table: the review comes back, b now holds and relays it
    assert review.signer in b.held and b.own.rows[review.signer].state == "back"
    assert b.own_announcements() == {}


async def test_a_review_of_a_blocked_store_is_refused_and_not_served(world):
    blocked_store = shop()
    sink = Sink()
    node = await world.node(1, on_reviews=sink, blocked=lambda store, tags: store == blocked_store)
    await node.handle(push_message([review_of(blocked_store).envelope(), review_of().envelope()]))
    assert node.served.refused == 1 and len(sink.got) == 1


async def test_reviews_have_their_own_share_of_the_table(world):
    node = await world.node(1, limits=GossipLimits(gossip_interval=60, max_announcements=2, max_reviews=2))
    await node.handle(push_message([review_of().envelope() for _ in range(3)]))
    assert node.served.accepted == 2 and node.served.refused == 1
    await node.handle(push_message(raw_items([make_ann(1), make_ann(2)])))
    assert node.served.accepted == 4  # the announcements were not crowded out by reviews
    assert len(await node.announcements()) == 2


async def test_reviews_survive_a_restart_of_gossip(world, tmp_path):
    node = await world.node(1, name="g.sqlite")
    own, relayed = review_of(), review_of()
    await node.publish_review(own.raw)
    await node.handle(push_message([relayed.envelope()]))
    again = await world.node(2, name="g.sqlite")
    assert again.held[relayed.signer].subject == relayed.store
    assert again.own.rows[own.signer].raw == own.raw  # still to be stemmed
    assert again.own.renewals_due(own.expires_at - 1) == []  # a review is not renewed
    assert await again.announcements() == [] and again.own_announcements() == {}


async def test_publish_refuses_what_does_not_verify(world):
    node = await world.node(1)
    forged = review_of().envelope()
    forged["body"]["text"] = "changed"
    with pytest.raises(SignatureError):
        await node.publish_review(json.dumps(forged).encode())
    with pytest.raises(ValidationError):
        await node.publish_review(make_ann(1).raw)


async def test_discovery_wires_gossip_reviews_to_its_directory(world, opened, tmp_path, clock):
    directory = await opened.directory(tmp_path, clock)
    node = await world.node(1)
    world.clock.t = clock.now = NOW
    discovery = Discovery(gossip=node, directory=directory, crawler=None, node_key=StoreKey.generate())
    review = review_of()
    await discovery.publish_review(review.raw)
    (due,) = await directory.due_checks(limit=5, recheck_after=60)
    assert due == review


async def test_a_store_at_its_cap_makes_room_with_its_oldest_review(world, tmp_path):
    limits = GossipLimits(gossip_interval=60, max_reviews=10, max_reviews_per_store=2)
    node = await world.node(1, limits=limits, name="cap.sqlite")
    store, other = shop(), shop()
    old, mid, new = (review_of(store, now=NOW - 300 + 100 * i) for i in range(3))
    theirs = review_of(other)
    await node.handle(push_message([mid.envelope(), new.envelope(), theirs.envelope()]))
    await node.handle(push_message([old.envelope()]))  # older than what the store holds: refused
    assert node.served.accepted == 3 and node.served.refused == 1
    newest = review_of(store, now=NOW + 100)
    await node.handle(push_message([newest.envelope()]))  # takes the place of the store's oldest held
    assert node.served.accepted == 4
    assert {k for k, h in node.held.items() if h.subject == store} == {new.signer, newest.signer}
    assert theirs.signer in node.held  # the other store's review is untouched
    again = await world.node(2, limits=limits, name="cap.sqlite")  # the database agrees with memory
    assert {k for k, h in again.held.items() if h.subject} == {new.signer, newest.signer, theirs.signer}


async def test_a_full_share_is_taken_from_the_store_holding_the_most(world):
    node = await world.node(1, limits=GossipLimits(gossip_interval=60, max_reviews=4, max_reviews_per_store=100))
    flooder, honest = shop(), shop()
    flood = [review_of(flooder, now=NOW + i) for i in range(4)]
    await node.handle(push_message([r.envelope() for r in flood]))
    assert node.served.accepted == 4
    first, second = review_of(honest), review_of(honest)
    await node.handle(push_message([first.envelope(), second.envelope()]))
    assert node.served.accepted == 6  # each took the place of the flooder's oldest
    held = {k for k, h in node.held.items() if h.subject}
    assert held == {flood[2].signer, flood[3].signer, first.signer, second.signer}
    third = review_of(honest, now=NOW - 10)  # even shares now: only its own store's oldest could make room
    await node.handle(push_message([third.envelope()]))
    assert node.served.refused == 1 and third.signer not in node.held


def test_review_room_evens_shares_and_never_ping_pongs():
    a, b = shop(), shop()
    held = {f"k{i}": Held(1, NOW + i, (), subject=a) for i in range(3)}
    room = ReviewRoom(held, per_store=10, total=3)
    assert room.admit(review_of(b)) and room.evicted == ["k0"]  # 3 vs 0: one moves over
    assert not room.admit(review_of(b, now=NOW - 400 * 86400 + 1))  # 2 vs 1: b's own oldest only, and newer
    back = ReviewRoom({"k1": held["k1"], "k2": held["k2"], "x": Held(1, NOW, (), subject=b)}, per_store=10, total=3)
    assert not back.admit(review_of(a, now=NOW - 400 * 86400 + 1)) and back.evicted == []
