"""Gossip: hostile messages, dedupe, expiry, capacity, peers (backoff, bans), the stem rule, cursor epochs.

Real nodes: ``Gossip`` on a real SQLiteDatabase in tmp_path, joined by an
in-memory transport that hands the bytes to the peer's real ``handle``.
"""

from __future__ import annotations

import json

import pytest

from node.core.errors import Conflict, NotFound, PayloadTooLarge, ValidationError
from node.discovery import gossip_wire as wire
from node.discovery.gossip import GossipLimits
from node.discovery.peers import BAN_SECONDS, MAX_BACKOFF

from .test_gossip_kit import NOW, Clock, Net, make_ann, node_onion, open_node, push_message, raw_items


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


def answer_of(data: bytes) -> wire.Answer:
    return wire.parse_answer(data)


# -- hostile messages --------------------------------------------------------------
@pytest.mark.parametrize(
    "message",
    [
        b"not json",
        b"[]",
        b'{"v": 1}',
        push_message([])[:-1] + b',"extra":1}',
        json.dumps({"v": 2, "from": None, "cursor": None, "push": [], "peers": []}).encode(),
        json.dumps({"v": True, "from": None, "cursor": None, "push": [], "peers": []}).encode(),
        push_message([], sender="nope"),
        push_message([], cursor={"epoch": "zz", "after": 1}),
        push_message([], cursor={"epoch": "ab", "after": -1}),
        push_message([], cursor={"epoch": "ab"}),
        push_message([], peers=["X" * 56]),
        push_message([], peers=[node_onion(i) for i in range(17)]),
        json.dumps({"v": 1, "from": None, "cursor": None, "push": {}, "peers": []}).encode(),
        push_message([{}] * 201),
        b'{"v":1,"v":1,"from":null,"cursor":null,"push":[],"peers":[]}',
        b'{"v":1,"from":null,"cursor":null,"push":[NaN],"peers":[]}',
    ],
)
async def test_malformed_messages_are_refused_whole(world, message):
    node = await world.node(1)
    with pytest.raises(ValidationError):
        await node.handle(message)
    assert await node.counts() == (0, 0)


async def test_oversized_message(world):
    node = await world.node(1)
    with pytest.raises(PayloadTooLarge):
        await node.handle(b" " * (wire.MAX_MESSAGE_BYTES + 1))


async def test_bad_envelopes_are_counted_and_good_ones_kept(world):
    node = await world.node(1)
    good = raw_items([make_ann(i) for i in range(3)])
    forged = json.loads(make_ann(7).raw)
    forged["body"]["name"] = "Forged"
    expired = json.loads(make_ann(8, now=NOW - 7 * 86400 - 10).raw)
    items = [good[0], "junk", forged, {"type": "pasar.announce"}, good[1], expired, 5, good[2]]
    answer = answer_of(await node.handle(push_message(items, sender=node_onion(2))))
    assert len(node.held) == 3 and node.served.accepted == 3 and node.served.rejected == 5
    assert sorted(a["store"] for a in answer.announcements) == sorted(a["store"] for a in good)
    assert node_onion(2) in node.peer_table.by_onion  # learned from "from"


async def test_replay_lower_and_equal_seq(world):
    node = await world.node(1)
    await node.handle(push_message(raw_items([make_ann(1, seq=NOW + 10)])))
    await node.handle(push_message(raw_items([make_ann(1, seq=NOW + 10)])))  # equal: duplicate, no error
    await node.handle(push_message(raw_items([make_ann(1, seq=NOW + 9)])))  # lower: a replay
    assert node.held[make_ann(1).store].seq == NOW + 10
    assert node.served.accepted == 1 and node.served.duplicates == 2 and node.served.rejected == 0
    before = node.counter
    await node.handle(push_message(raw_items([make_ann(1, seq=NOW + 11)])))
    assert node.held[make_ann(1).store].seq == NOW + 11 and node.counter == before + 1
    assert (await node.announcement(make_ann(1).store)).seq == NOW + 11


async def test_expired_announcements_are_dropped_and_not_served(world):
    node = await world.node(1)
    await node.handle(push_message(raw_items([make_ann(1, ttl=3600), make_ann(2)])))
    world.clock.t = NOW + 3600
    answer = answer_of(await node.handle(push_message([])))
    assert [a["store"] for a in answer.announcements] == [make_ann(2).store]
    assert [a.store for a in await node.announcements()] == [make_ann(2).store]
    await node.round()
    assert set(node.held) == {make_ann(2).store}


async def test_capacity_evicts_the_soonest_expiring_if_the_newcomer_outlives_it(world):
    node = await world.node(1, limits=GossipLimits(gossip_interval=60, max_announcements=3))
    await node.handle(push_message(raw_items([make_ann(i, ttl=86400 * (i + 1)) for i in range(3)])))
    await node.handle(push_message(raw_items([make_ann(10, ttl=3600)])))  # expires first: refused
    assert len(node.held) == 3 and node.served.refused == 1
    await node.handle(push_message(raw_items([make_ann(11, ttl=86400 * 5)])))
    assert set(node.held) == {make_ann(i).store for i in (1, 2, 11)}
    rows = await node.db.execute("SELECT count(*) FROM announcements")
    assert rows[0][0] == 3


async def test_blocked_stores_are_dropped_and_never_relayed(world):
    blocked = {make_ann(1).store}
    node = await world.node(1, blocked=lambda store, tags: store in blocked or "bad" in tags)
    items = raw_items([make_ann(1), make_ann(2, tags=("bad", "x")), make_ann(3)])
    answer = answer_of(await node.handle(push_message(items)))
    assert [a["store"] for a in answer.announcements] == [make_ann(3).store]
    assert node.served.refused == 2
    blocked.add(make_ann(3).store)  # blocked later: not served, and forget_store drops it
    assert answer_of(await node.handle(push_message([]))).announcements == []
    assert await node.announcement(make_ann(3).store) is None
    await node.forget_store(make_ann(3).store)
    assert node.held == {}


async def test_per_exchange_cap_and_push_budget(world):
    node = await world.node(1, limits=GossipLimits(gossip_interval=60, per_exchange=20, push_budget=50))
    anns = raw_items([make_ann(i) for i in range(60)])
    await node.handle(push_message(anns[:40]))
    assert len(node.held) == 20 and node.served.refused == 20
    await node.handle(push_message(anns[20:60]))  # 30 tokens left: 20 cap
    await node.handle(push_message(anns[40:60]))  # 10 tokens left
    assert len(node.held) == 50
    world.clock.t += 60  # the budget refills over one interval
    await node.handle(push_message(anns[50:60]))
    assert len(node.held) == 60


async def test_answers_page_with_a_since_cursor(world):
    node = await world.node(1, limits=GossipLimits(gossip_interval=60, page_size=10))
    await node.handle(push_message(raw_items([make_ann(i) for i in range(25)])))
    seen, cursor = [], None
    for _ in range(5):
        ans = answer_of(await node.handle(push_message([], cursor=cursor)))
        seen += [a["store"] for a in ans.announcements]
        cursor = {"epoch": ans.epoch, "after": ans.next}
        if not ans.more:
            break
    assert sorted(seen) == sorted(node.held) and len(seen) == 25
    empty = answer_of(await node.handle(push_message([], cursor=cursor)))
    assert empty.announcements == [] and not empty.more and empty.next == cursor["after"]
    fresh = answer_of(await node.handle(push_message([], cursor={"epoch": "0badc0de", "after": 20})))
    assert len(fresh.announcements) == 10  # another epoch: from the start


# -- peers ------------------------------------------------------------------------
async def test_add_remove_ban_and_validation(world):
    node = await world.node(1)
    view = await node.add_peer(node_onion(2) + ".onion")
    assert view["onion"] == node_onion(2) and view["source"] == "manual" and view["score"] == 0.5
    for bad in ("nope", "a" * 56, node_onion(1)):
        with pytest.raises(ValidationError):
            await node.add_peer(bad)
    await node.remove_peer(node_onion(2))
    with pytest.raises(NotFound):
        await node.remove_peer(node_onion(2))
    await node.ban_peer(node_onion(3))
    assert [(p["onion"], p["banned"]) for p in await node.peers()] == [(node_onion(3), True)]
    await node.handle(push_message([], sender=node_onion(3)))  # gossip does not unban
    assert (await node.peers())[0]["banned"]
    assert (await node.add_peer(node_onion(3)))["banned"] is False  # an operator's add does


async def test_backoff_doubles_up_to_a_day_and_success_resets(world):
    node = await world.node(1)
    await node.add_peer(node_onion(2))  # not in the net: unreachable
    expected = []
    for failures in range(1, 13):
        world.clock.t = max(world.clock.t, (await node.peers())[0]["next_try"])
        stats = await node.round()
        assert stats.failed == 1
        peer = (await node.peers())[0]
        assert peer["failures"] == failures
        assert peer["next_try"] - int(world.clock.t) == min(60 * 2**failures, MAX_BACKOFF)
        expected.append(peer["score"])
    assert expected == sorted(expected, reverse=True) and peer["next_try"] - int(world.clock.t) == MAX_BACKOFF
    await world.node(2)
    world.clock.t = peer["next_try"]
    assert (await node.round()).succeeded == 1
    peer = (await node.peers())[0]
    assert peer["failures"] == 0 and peer["last_success"] == int(world.clock.t) and peer["score"] > expected[-1]


async def test_peer_table_evicts_the_lowest_score(world):
    node = await world.node(1, limits=GossipLimits(gossip_interval=60, max_peers=3))
    for i in (2, 3, 4):
        await node.add_peer(node_onion(i), "gossip")
    await node.peer_table.failed(node.peer_table.by_onion[node_onion(3)], now=NOW)
    await node.handle(push_message([], peers=[node_onion(5), node_onion(6)]))
    onions = {p["onion"] for p in await node.peers()}
    assert onions == {node_onion(2), node_onion(4), node_onion(5)}  # 6 found no one scoring below 0.5
    await node.add_peer(node_onion(7))  # an operator's add always makes room
    assert len(await node.peers()) == 3 and node_onion(7) in {p["onion"] for p in await node.peers()}


async def test_a_peer_answering_bad_signatures_is_banned_for_a_day(world):
    node = await world.node(1)
    await node.add_peer(node_onion(2))
    forged = json.loads(make_ann(5).raw)
    forged["body"]["name"] = "Forged"

    class Liar:
        calls = 0

        async def exchange(self, peer, message, *, alone=False):
            Liar.calls += 1
            return wire.encode_answer("ab", 1, False, 1, [json.dumps(forged).encode()], [])

    node.transport = Liar()
    for _ in range(3):
        stats = await node.round()
        assert stats.rejected == 1
    assert stats.banned == [node_onion(2)]
    assert (await node.peers())[0]["banned"]
    calls = Liar.calls
    await node.round()
    assert Liar.calls == calls  # not contacted while banned
    world.clock.t += BAN_SECONDS + 1
    await node.round()
    assert Liar.calls == calls + 1


async def test_add_peer_when_full_of_banned_peers(world):
    node = await world.node(1, limits=GossipLimits(gossip_interval=60, max_peers=1))
    await node.ban_peer(node_onion(2))
    with pytest.raises(Conflict):
        await node.add_peer(node_onion(3))


# -- rounds ------------------------------------------------------------------------
async def test_a_round_pushes_what_is_new_and_pulls_what_is_missing(world):
    a, b = await world.node(1), await world.node(2)
    await a.add_peer(node_onion(2))
    await a.handle(push_message(raw_items([make_ann(1)])))
    await b.handle(push_message(raw_items([make_ann(2)])))
    await a.round()
    assert set(a.held) == set(b.held) == {make_ann(1).store, make_ann(2).store}
    assert node_onion(1) in b.peer_table.by_onion  # b learned a from "from"
    world.net.log.clear()
    world.clock.t += 60
    stats = await a.round()  # steady state: nothing new, a few hundred bytes
    assert stats.messages == 1 and stats.sent_bytes + stats.received_bytes < 1000
    request = json.loads(world.net.log[0][2])
    assert request["push"] == [] and request["cursor"]["epoch"] == b.epoch


async def test_a_wiped_peer_is_pulled_from_the_start(world, tmp_path):
    a, b = await world.node(1), await world.node(2)
    await a.add_peer(node_onion(2))
    await b.handle(push_message(raw_items([make_ann(i) for i in range(3)])))
    await a.round()
    old_epoch = b.epoch
    world.net.nodes.pop(node_onion(2))
    b2 = await world.node(2, name="wiped.sqlite")  # same onion, empty database, new epoch
    await b2.handle(push_message(raw_items([make_ann(9)])))
    assert b2.epoch != old_epoch and b2.counter == 1
    world.clock.t += 60
    await a.round()
    assert make_ann(9).store in a.held
    assert a.peer_table.by_onion[node_onion(2)].pull_epoch == b2.epoch


async def test_state_survives_a_restart(world, tmp_path):
    a = await world.node(1)
    await a.add_peer(node_onion(2))
    await a.handle(push_message(raw_items([make_ann(1)])))
    await a.announce_own(make_ann(5))
    await a.db.close()
    again = await world.node(1)
    assert set(again.held) == {make_ann(1).store} and again.epoch == a.epoch and again.counter == a.counter
    assert [p["onion"] for p in await again.peers()] == [node_onion(2)]
    assert set(again.own.rows) == {make_ann(5).store}


# -- the stem rule -----------------------------------------------------------------
async def test_own_announcement_goes_alone_to_one_random_peer_and_is_served_only_once_back(world):
    a = await world.node(1)
    others = [await world.node(i) for i in (2, 3, 4, 5)]
    for o in others:
        await a.add_peer(o.me)
        await o.add_peer(a.me)
    await a.handle(push_message(raw_items([make_ann(50), make_ann(51)])))
    own = [make_ann(60), make_ann(61)]
    for ann in own:
        await a.announce_own(ann)
    assert all(ann.store not in a.held for ann in own)
    due = max(r.due_at for r in a.own.rows.values())
    assert all(NOW <= r.due_at <= NOW + 60 for r in a.own.rows.values())
    world.net.log.clear()
    world.clock.t = due
    stats = await a.round()
    assert stats.stems == 2
    stems = [json.loads(m) for s, _, m, _ in world.net.log if s == a.me and json.loads(m)["from"] is None]
    assert len(stems) == 2
    for message in stems:
        assert message["cursor"] == "head" and message["peers"] == [] and len(message["push"]) == 1
    # each stem on a circuit of its own, never on the one the node's named exchanges use
    assert sorted(json.loads(m)["push"][0]["store"] for m in world.net.alone) == sorted(ann.store for ann in own)
    assert {m["push"][0]["store"] for m in stems} == {ann.store for ann in own}
    normal = [json.loads(m) for s, _, m, _ in world.net.log if s == a.me and json.loads(m)["from"] == a.me]
    assert all(p["store"] not in {ann.store for ann in own} for m in normal for p in m["push"])
    served = answer_of(await a.handle(push_message([])))
    assert {x["store"] for x in served.announcements} == {make_ann(50).store, make_ann(51).store}
    for _ in range(6):  # the network relays them; they come back to a
        world.clock.t += 60
        for node in [a, *others]:
            await node.round()
    assert all(a.own.rows[ann.store].state == "back" for ann in own)
    served = answer_of(await a.handle(push_message([])))
    assert {ann.store for ann in own} <= {x["store"] for x in served.announcements}


async def test_stem_waits_for_a_reachable_peer_and_restems_when_lost(world):
    a = await world.node(1)
    await a.announce_own(make_ann(60))
    world.clock.t += 60
    assert (await a.round()).stems == 0  # no peer: retried next round
    assert a.own.rows[make_ann(60).store].state == "pending"
    b = await world.node(2)
    await a.add_peer(b.me)
    world.clock.t += 60
    assert (await a.round()).stems == 1
    row = a.own.rows[make_ann(60).store]
    assert row.state == "sent" and row.stem_peer == b.me
    await b.forget_store(make_ann(60).store)  # b dropped it: it never comes back
    c = await world.node(3)
    await a.add_peer(c.me)
    world.clock.t += 3 * 60
    a.rng.seed(1)
    stats = await a.round()
    assert stats.stems == 1 and a.own.rows[make_ann(60).store].stem_peer == c.me


async def test_renewal_at_half_life_and_withdraw(world):
    fresh = make_ann(60, seq=NOW + 2 * 86400, now=NOW + 2 * 86400, ttl=4 * 86400)

    async def renew(store):
        return fresh

    a = await world.node(1, renew=renew)
    await a.announce_own(make_ann(60, ttl=4 * 86400))
    world.clock.t = NOW + 2 * 86400 - 1
    await a.round()
    assert a.own.rows[fresh.store].seq == NOW
    world.clock.t = NOW + 2 * 86400
    await a.round()
    assert a.own.rows[fresh.store].seq == fresh.seq and a.own.rows[fresh.store].state == "pending"
    await a.withdraw_own(fresh.store)
    assert a.own.rows == {} and await a.db.execute("SELECT * FROM own") == []


async def test_first_contact_of_a_synced_node_asks_for_head_unless_the_peer_holds_more(world):
    a, b, c, d = [await world.node(i) for i in (1, 2, 3, 4)]
    await b.handle(push_message(raw_items([make_ann(i) for i in range(3)])))
    await c.handle(push_message(raw_items([make_ann(i) for i in range(10, 16)])))
    await d.handle(push_message(raw_items([make_ann(20)])))
    await a.add_peer(b.me)
    await a.round()  # first contact of a fresh node: from the start
    assert len(a.held) == 3
    for other in (c, d):
        await a.add_peer(other.me)
        world.net.log.clear()
        world.clock.t += 60
        for peer in a.peer_table.by_onion.values():
            peer.next_try = int(world.clock.t) + (0 if peer.onion == other.me else 10**6)  # only the new one is due
        await a.round()
        first = json.loads(next(m for _, p, m, _ in world.net.log if p == other.me))
        assert first["cursor"] == "head"
    assert set(a.held) == {make_ann(i).store for i in (0, 1, 2, 10, 11, 12, 13, 14, 15)}  # c held more: all of it
    assert make_ann(20).store not in a.held  # d held less: only what is new from now on
    await d.handle(push_message(raw_items([make_ann(21)])))
    world.clock.t += 60
    await a.round()
    assert make_ann(21).store in a.held


async def test_push_carries_news_only(world):
    a, b = await world.node(1), await world.node(2)
    await a.handle(push_message(raw_items([make_ann(1)])))
    world.clock.t += 3 * 60
    await a.add_peer(b.me)
    a.peer_table.by_onion[b.me].push_after = 0
    await a.handle(push_message(raw_items([make_ann(2)])))
    await a.round()
    pushed = [p["store"] for m in world.net.link(a.me).sent_to(b.me) for p in m["push"]]
    assert pushed == [make_ann(2).store]
