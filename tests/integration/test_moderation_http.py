"""The vendor's ModeratorClient against a moderator's real node-onion app on loopback (LoopbackHttp).

The moderator runs ``ModeratorService`` on a SQLite file in tmp_path behind
``create_node_app`` on 127.0.0.1. With a regtest bitcoind (tests/conftest.py)
the whole money path runs: keys from the vendor's and moderator's wallets, the
buyer pays the escrow from its own wallet, the moderator signs a refund after
``accept_by`` (and refuses a tampered one), and a dispute is decided, signed
by the moderator, co-signed by the vendor and broadcast.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from node.adapters.bitcoin import BitcoinCore
from node.adapters.loophttp import LoopbackHttp
from node.adapters.moderation_schema import MIGRATIONS
from node.adapters.sqlite import SQLiteDatabase
from node.core import ports
from node.core.crypto import StoreKey
from node.core.errors import Conflict, NotFound, PsbtRefused, Unreachable
from node.core.models import Sats
from node.payments import escrow, payouts, psbt_check
from node.payments.models import Dispute, Funding, KeyRef, Order, Party, PayoutKind
from node.payments.moderation import CaseState, ModeratorService
from node.payments.moderation_wire import KeyRequest
from node.payments.moderator_client import ModeratorClient
from node.web import appkeys, render
from node.web.nodeonion import create_node_app
from tests.regtest import Regtest
from tests.unit.order_helpers import order as sample_order

G1 = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
G2 = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5"
G3 = "02f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9"
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
PRICE = 100_000


class Market:
    def __init__(self, key: StoreKey) -> None:
        self.store = key

    async def key(self, onion: str) -> StoreKey:
        assert onion == self.store.onion
        return self.store


class Clock:
    """Wall time plus a controllable offset, shared by the moderator's service and the vendor's client."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return int(time.time()) + self.offset


@dataclass
class Moderator:
    service: ModeratorService
    client: ModeratorClient
    vendor: StoreKey
    http: LoopbackHttp
    clock: Clock


async def _moderator(tmp_path: Path, bitcoin: ports.Bitcoin | None, *, with_service: bool = True):
    db = SQLiteDatabase(tmp_path / "moderation.sqlite", MIGRATIONS)
    await db.open()
    key = StoreKey.generate()
    clock = Clock()
    service = ModeratorService(db, bitcoin, key, clock, network="regtest" if bitcoin is not None else None)
    await service.set_offer(
        {"enabled": True, "fee_percent": 2, "fee_sat": 500, "terms": "Photos or it did not happen."}
    )
    admin = web.Application()
    admin[appkeys.JINJA] = render.make_env(TEMPLATES)
    admin[appkeys.CSS] = (TEMPLATES / "static" / "style.css").read_bytes()
    if with_service:
        admin[appkeys.MODERATION] = service
    server = TestServer(create_node_app(admin, onion=key.onion), host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("/")).rstrip("/")
    http = LoopbackHttp(lambda onion: base if onion == key.onion else None)
    vendor = StoreKey.generate()
    moderator = Moderator(service, ModeratorClient(http, Market(vendor), clock), vendor, http, clock)
    return moderator, server, db


@pytest.fixture
async def offline_moderator(tmp_path: Path) -> AsyncIterator[Moderator]:
    moderator, server, db = await _moderator(tmp_path, None)
    yield moderator
    await moderator.http.close()
    await server.close()
    await db.close()


@pytest.fixture
async def moderator(tmp_path: Path, moderator_core: BitcoinCore) -> AsyncIterator[Moderator]:
    m, server, db = await _moderator(tmp_path, moderator_core)
    yield m
    await m.http.close()
    await server.close()
    await db.close()


# -- without Bitcoin Core ----------------------------------------------------------------------------
async def test_offer_over_http_and_refusals(offline_moderator: Moderator) -> None:
    m = offline_moderator
    offer = await m.client.offer(m.service.onion)
    assert offer == await m.service.offer() and offer.fee_for(Sats(PRICE)) == 2500
    refund = escrow.escrow_address(b"refund", "regtest")
    details = KeyRequest(Sats(PRICE), refund, KeyRef(G1), KeyRef(G2), KeyRef(G3), 144, "regtest")
    # 503 from the moderator (it has no wallet): the client keeps the moderator's words in its log only
    with pytest.raises(Unreachable, match="could not answer now"):
        await m.client.request_key(m.vendor.onion, m.service.onion, "0011223344556677", details)
    await m.service.set_offer({"enabled": False})
    with pytest.raises(NotFound):
        await m.client.offer(m.service.onion)


async def test_hostile_bodies_get_4xx_json(offline_moderator: Moderator) -> None:
    m = offline_moderator
    url = f"http://{m.service.onion}.onion/.well-known/pasar/moderation/key"
    for body in (b"not json", b"[]", b"{" * 5000 + b"}" * 5000, b'{"a":1,"a":2}', b"x" * (300 * 1024)):
        reply = await m.http.post(url, body)
        assert 400 <= reply.status < 500, (body[:20], reply.status, reply.body[:200])
        assert reply.headers["Content-Type"].startswith("application/json")


async def test_no_moderation_service_is_404(tmp_path: Path) -> None:
    m, server, db = await _moderator(tmp_path, None, with_service=False)
    try:
        with pytest.raises(NotFound):
            await m.client.offer(m.service.onion)
        reply = await m.http.post(f"http://{m.service.onion}.onion/.well-known/pasar/moderation/case", b"{}")
        assert reply.status == 404
    finally:
        await m.http.close()
        await server.close()
        await db.close()


# -- with a regtest bitcoind -------------------------------------------------------------------------
async def funded_order(m: Moderator, regtest: Regtest, vendor_core: BitcoinCore, order_id: str) -> Order:
    """Keys from the three wallets, the escrow checked by both nodes' Cores, paid by the buyer, 1 confirmation."""
    buyer = escrow.parse_key(regtest.key("buyer"))
    refund = regtest.address("buyer")
    v, v2 = await vendor_core.new_key(), await vendor_core.new_key()
    details = KeyRequest(
        Sats(PRICE), refund, buyer, KeyRef(v.pubkey, v.origin), KeyRef(v2.pubkey, v2.origin), 144, "regtest"
    )
    answer = await m.client.request_escrow_key(m.vendor.onion, m.service.onion, order_id, details)
    desc = escrow.descriptor(buyer, details.vendor, answer.terms.pubkey, details.vendor_timeout, 144)
    checksum = await vendor_core.checksum(desc)
    built = escrow.build_escrow(
        buyer,
        details.vendor,
        answer.terms.pubkey,
        details.vendor_timeout,
        144,
        checksum,
        "regtest",
        await vendor_core.derive_address(f"{desc}#{checksum}"),
    )
    assert (built.descriptor, built.address) == (answer.descriptor, answer.address)
    await vendor_core.watch(built.descriptor)
    regtest.fund("buyer", built.address, PRICE)
    regtest.mine(1)
    utxos = await vendor_core.unspent([built.address])
    funding = Funding(
        Sats(sum(u.amount_sat for u in utxos)),
        tuple((u.txid, u.vout, u.amount_sat) for u in utxos),
        1,
        regtest.height(),
    )
    return dataclasses.replace(
        sample_order(),
        id=order_id,
        store=m.vendor.onion,
        amount_sat=Sats(PRICE),
        refund_address=escrow.parse_address(refund, "regtest"),
        escrow=built,
        moderator=answer.terms,
        funding=funding,
        vendor_address=v.address,
    )


async def _broadcast(core: BitcoinCore, regtest: Regtest, psbt: str) -> str:
    final = await core.finalize(psbt)
    assert final.complete and final.hex is not None
    assert await core.test_accept(final.hex) is None
    txid = await core.broadcast(final.hex)
    regtest.mine(1)
    return txid


async def test_refund_after_accept_by_signed_by_the_moderator(
    moderator: Moderator, regtest: Regtest, vendor_core: BitcoinCore, moderator_core: BitcoinCore
) -> None:
    m = moderator
    order = await funded_order(m, regtest, vendor_core, "a1a1a1a1a1a1a1a1")
    plan = payouts.plan(PayoutKind.REFUND, order=order, fee_rate=2)
    psbt = await vendor_core.create_psbt(plan.inputs, plan.psbt_outputs, order.escrow.descriptor)
    with pytest.raises(Conflict, match="may still accept"):
        await m.client.refund(dataclasses.replace(order, accept_by=m.clock() + 600), psbt)
    late = dataclasses.replace(order, accept_by=m.clock() - 1)
    with pytest.raises(Conflict, match="first saw the escrow funded"):  # the requester's accept_by is not enough
        await m.client.refund(late, psbt)
    m.clock.offset += 3600  # the moderator's own minimum window since it saw the escrow funded
    late = dataclasses.replace(order, accept_by=m.clock() - 1)
    thief = [(order.vendor_address, plan.outputs[0].amount_sat)]
    stolen = await vendor_core.create_psbt(plan.inputs, thief, order.escrow.descriptor)
    with pytest.raises(PsbtRefused, match="not in the agreed payout"):
        await m.client.refund(late, stolen)
    greedy = [(order.refund_address, PRICE // 2)]  # half the escrow left as fee
    with pytest.raises(PsbtRefused, match="fee"):
        await m.client.refund(late, await vendor_core.create_psbt(plan.inputs, greedy, order.escrow.descriptor))
    rate = 3 * await moderator_core.fee_rate()  # the moderator's cap: 3x its own Core's estimate
    pricey = payouts.plan(PayoutKind.REFUND, order=order, fee_rate=rate + 1)
    with pytest.raises(PsbtRefused, match=f"over {rate} sat/vB"):
        await m.client.refund(
            late, await vendor_core.create_psbt(pricey.inputs, pricey.psbt_outputs, order.escrow.descriptor)
        )
    rbf = [(txid, vout, 0xFFFFFFFD) for txid, vout, _seq in plan.inputs]
    with pytest.raises(PsbtRefused, match="sequence"):
        await m.client.refund(late, await vendor_core.create_psbt(rbf, plan.psbt_outputs, order.escrow.descriptor))
    answer = await m.client.refund(late, psbt)
    assert answer.state == CaseState.REFUND_SIGNED.value and answer.psbt is not None
    disputed = dataclasses.replace(order, dispute=Dispute(Party.VENDOR, m.clock(), ((Party.VENDOR, "too late"),)))
    with pytest.raises(Conflict, match=r"this order is being refunded; the refund signed at .* pays the buyer"):
        await m.client.dispute(disputed, order.vendor_address or "")
    signed = regtest.sign("buyer", answer.psbt)
    txid = await _broadcast(vendor_core, regtest, signed)
    assert await vendor_core.unspent([order.escrow.address]) == []
    assert (await vendor_core.tx_confirmations(txid) or 0) >= 1


async def test_dispute_decided_signed_and_co_signed_by_the_vendor(
    moderator: Moderator, regtest: Regtest, vendor_core: BitcoinCore
) -> None:
    m = moderator
    order = await funded_order(m, regtest, vendor_core, "d1d1d1d1d1d1d1d1")
    order = dataclasses.replace(
        order, dispute=Dispute(Party.BUYER, int(time.time()), ((Party.BUYER, "half of it broke"),))
    )
    payout_address = (await vendor_core.new_key()).address
    answer = await m.client.dispute(order, payout_address)
    assert answer.state == "disputed" and answer.psbt is None
    (case,) = await m.service.disputes()
    fee = case.moderator_sat
    assert fee == 500 + PRICE * 2 // 100
    decided = await m.service.decide(case.id, PRICE // 2, PRICE // 2 - fee)
    assert decided.state is CaseState.DECIDED and decided.psbt
    with pytest.raises(Conflict):
        await m.service.decide(case.id, PRICE // 2, PRICE // 2 - fee)
    polled = await m.client.poll(order)
    assert (polled.state, polled.buyer_sat, polled.vendor_sat, polled.moderator_sat) == (
        "decided",
        PRICE // 2,
        PRICE // 2 - fee,
        fee,
    )
    assert polled.psbt is not None and polled.fee_rate and polled.moderator_address
    rebuilt = payouts.plan(
        PayoutKind.SPLIT,
        order=order,
        fee_rate=polled.fee_rate,
        split=(PRICE // 2, PRICE // 2 - fee, fee),
        vendor_address=payout_address,
        moderator_address=polled.moderator_address,
    )
    psbt_check.check_payout(
        await vendor_core.decode_psbt(polled.psbt),
        escrow=order.escrow,
        outpoints=order.funding.outpoints,
        plan_outputs=rebuilt.outputs,
        own_pubkey=order.escrow.vendor.pubkey,
        max_fee_rate=500,
        raw=polled.psbt,
    )
    decoded = await vendor_core.decode_psbt(polled.psbt)
    paid = {o.address: o.amount_sat for o in decoded.outputs}
    assert paid[order.refund_address] < PRICE // 2 and paid[payout_address] < PRICE // 2 - fee
    assert fee in paid.values()  # the moderator's fee pays no network fee
    cosigned = await vendor_core.sign(polled.psbt)
    await _broadcast(vendor_core, regtest, cosigned)
    assert await vendor_core.unspent([order.escrow.address]) == []
