"""Moderation: the offer, key requests, case messages, replay and signature checks, the vendor's client.

A real ``SQLiteDatabase`` on tmp_path; Bitcoin Core is a small fake here (its
addresses are computed as Core would); tests/integration/test_moderation_http.py
runs the same flows against a real regtest bitcoind over loopback HTTP.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence

import pytest

from node.adapters.moderation_schema import MIGRATIONS
from node.adapters.sqlite import SQLiteDatabase
from node.core import crypto, envelope, ports
from node.core.crypto import StoreKey
from node.core.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PsbtRefused,
    SignatureError,
    Unavailable,
    Unreachable,
    ValidationError,
)
from node.core.models import HttpReply, Sats
from node.payments import escrow
from node.payments import moderation_wire as wire
from node.payments.models import Dispute, Funding, KeyRef, Order, Party
from node.payments.moderation import CaseState, ModeratorService
from node.payments.moderation_store import ModerationStore
from node.payments.moderator_client import ModeratorClient
from tests.unit.order_helpers import order as sample_order

T0 = 1_800_000_000
_P = 2**256 - 2**32 - 977
_N = 2**256 - 432420386565659656852420866394968145599
_G = (
    0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
    0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8,
)


def _add(a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    if a is None or b is None:
        return a or b
    if a[0] == b[0] and (a[1] + b[1]) % _P == 0:
        return None
    if a == b:
        lam = 3 * a[0] * a[0] * pow(2 * a[1], -1, _P) % _P
    else:
        lam = (b[1] - a[1]) * pow(b[0] - a[0], -1, _P) % _P
    x = (lam * lam - a[0] - b[0]) % _P
    return x, (lam * (a[0] - x) - a[1]) % _P


def pubkey(secret: int) -> str:
    """The compressed public key of ``secret`` (plain double-and-add: test keys only)."""
    point, addend = None, _G
    while secret:
        if secret & 1:
            point = _add(point, addend)
        addend = _add(addend, addend)
        secret >>= 1
    assert point is not None
    return ("02" if point[1] % 2 == 0 else "03") + f"{point[0]:064x}"


BUYER = KeyRef(pubkey(11), "[aaaaaaaa/84h/1h/0h/0/1]")
VENDOR = KeyRef(pubkey(12), "[bbbbbbbb/84h/1h/0h/0/1]")
VENDOR2 = KeyRef(pubkey(13), "[bbbbbbbb/84h/1h/0h/0/2]")
REFUND = escrow.escrow_address(b"refund", "regtest")  # any valid regtest address
VENDOR_PAYOUT = escrow.escrow_address(b"vendor", "regtest")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class FakeCore:
    """What the moderator asks of Bitcoin Core for keys and escrows (addresses computed as Core would)."""

    def __init__(self) -> None:
        self.keys = 0
        self.watched: list[str] = []
        self.utxos: list[ports.Utxo] = []

    async def chain(self) -> str:
        return "regtest"

    async def new_key(self) -> ports.WalletKey:
        self.keys += 1
        return ports.WalletKey(pubkey(100 + self.keys), f"[cccccccc/84h/1h/0h/0/{self.keys}]", REFUND)

    async def checksum(self, descriptor: str) -> str:
        return escrow.descriptor_checksum(descriptor)

    async def derive_address(self, descriptor: str) -> str:
        b, v, m, v2, n = escrow.parse_descriptor(descriptor)
        return escrow.escrow_address(escrow.witness_script(b, v, m, v2, n), "regtest")

    async def watch(self, descriptor: str) -> None:
        self.watched.append(descriptor)

    async def unspent(self, addresses: Sequence[str]) -> list[ports.Utxo]:
        return [u for u in self.utxos if u.address in addresses]

    async def fee_rate(self) -> int:
        return 2

    async def decode_psbt(self, psbt: str) -> ports.DecodedPsbt:
        raise PsbtRefused("reached the PSBT checks")  # no PSBT is decoded in these tests


@pytest.fixture
async def db(tmp_path):
    database = SQLiteDatabase(tmp_path / "moderation.sqlite", MIGRATIONS)
    await database.open()
    yield database
    await database.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def core():
    return FakeCore()


@pytest.fixture
async def service(db, core, clock):
    svc = ModeratorService(db, core, StoreKey.generate(), clock)
    await svc.set_offer({"enabled": True, "fee_percent": 2, "fee_sat": 1000, "terms": "I read both sides."})
    return svc


VENDOR_KEY = StoreKey.generate()


def request(svc: ModeratorService, order_id: str = "00112233aabbccdd", **changes: object) -> dict[str, object]:
    details = wire.KeyRequest(Sats(100_000), REFUND, BUYER, VENDOR, VENDOR2, 144, "regtest")
    body = {**wire.key_request_body(svc.onion, order_id, details), **changes}
    return dict(sealed(wire.KEY_REQUEST_TYPE, body))


_seq = iter(range(1, 10**9))


def sealed(type_: str, body: Mapping[str, object], *, key: StoreKey = VENDOR_KEY, now: int = T0, ttl: int = 3600):
    return envelope.seal(key, type_, body, seq=next(_seq), issued_at=now, expires_at=now + ttl)


def case_env(svc: ModeratorService, kind: str, order_id: str = "00112233aabbccdd", **body: object):
    return dict(sealed(wire.CASE_TYPE, {"moderator": svc.onion, "order_id": order_id, "kind": kind, **body}))


# -- the offer ---------------------------------------------------------------------------------------
async def test_settings_are_validated_all_at_once(db, core, clock):
    svc = ModeratorService(db, core, StoreKey.generate(), clock)
    assert (await svc.offer()).enabled is False
    with pytest.raises(ValidationError) as caught:
        await svc.set_offer({"enabled": "yes", "fee_percent": 51, "fee_sat": -1, "terms": 5, "color": "red"})
    assert set(caught.value.fields) == {"enabled", "fee_percent", "fee_sat", "terms", "color"}
    with pytest.raises(ValidationError):
        await svc.set_offer(["enabled"])
    assert (await svc.offer()).enabled is False  # nothing written
    offer = await svc.set_offer({"fee_percent": 3})
    assert (offer.fee_percent, offer.enabled) == (3, False)  # a PATCH: the rest kept


async def test_the_signed_offer_verifies_against_the_node_onion(service, clock):
    env = await service.signed_offer()
    opened = envelope.open_(json.loads(crypto.canonical_json(env)), now=clock(), expected_type=wire.OFFER_TYPE)
    offer = wire.read_offer(opened)
    assert offer == await service.offer()
    assert offer.onion == service.onion and offer.fee_for(Sats(100_000)) == 3000
    await service.set_offer({"enabled": False})
    with pytest.raises(NotFound):
        await service.signed_offer()


# -- keys ----------------------------------------------------------------------------------------------
async def test_a_key_request_builds_and_watches_the_escrow(service, core, clock):
    answer = await service.key_request(request(service))
    opened = envelope.open_(dict(answer), now=clock(), expected_type=wire.KEY_TYPE)
    assert opened["store"] == service.onion
    key = wire.read_key_answer(opened, reply_to=answer["body"]["reply_to"])
    assert key.terms.pubkey == KeyRef(pubkey(101), "[cccccccc/84h/1h/0h/0/1]")
    assert (key.terms.fee_percent, key.terms.fee_sat) == (2, 1000)
    assert key.terms.terms_hash == wire.terms_hash("I read both sides.")
    assert core.watched == [key.descriptor]
    expected = escrow.escrow_address(escrow.witness_script(BUYER, VENDOR, key.terms.pubkey, VENDOR2, 144), "regtest")
    assert key.address == expected
    (case,) = await service.cases()
    assert (case.state, case.amount_sat, case.moderator_sat, case.refund_address) == (
        CaseState.OPEN,
        100_000,
        3000,
        REFUND,
    )


async def test_the_same_envelope_again_gets_the_same_answer_and_no_new_key(service, core):
    env = request(service)
    first = await service.key_request(env)
    again = await service.key_request(json.loads(json.dumps(env)))
    assert again == first and core.keys == 1


async def test_another_envelope_reusing_a_seq_is_refused(service):
    env = request(service)
    await service.key_request(env)
    other = request(service, order_id="ffeeddccbbaa0011")
    forged = envelope.seal(
        VENDOR_KEY, wire.KEY_REQUEST_TYPE, other["body"], seq=env["seq"], issued_at=T0, expires_at=T0 + 60
    )
    with pytest.raises(SignatureError, match="replay"):
        await service.key_request(dict(forged))


async def test_a_new_request_for_the_same_order_gets_the_same_key(service, core):
    first = await service.key_request(request(service))
    second = await service.key_request(request(service))
    assert first["body"]["pubkey"] == second["body"]["pubkey"] and core.keys == 1
    with pytest.raises(Conflict):
        await service.key_request(request(service, amount_sat=200_000))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda e: {**e, "sig": e["sig"][:-2] + ("AA" if e["sig"][-2:] != "AA" else "BB")},
        lambda e: {**e, "body": {**e["body"], "amount_sat": 1}},
        lambda e: {k: v for k, v in e.items() if k != "sig"},
        lambda e: {**e, "type": wire.CASE_TYPE},
    ],
)
async def test_unsigned_badly_signed_or_mistyped_requests_are_refused(service, core, tamper):
    with pytest.raises(BadRequest):  # SignatureError and ValidationError both are
        await service.key_request(tamper(request(service)))
    assert core.keys == 0 and await service.cases() == []


async def test_stale_future_and_long_lived_requests_are_refused(service, core, clock):
    env = request(service)
    clock.now = T0 + 3600
    with pytest.raises(SignatureError, match="expired"):
        await service.key_request(env)
    clock.now = T0
    future = dict(sealed(wire.KEY_REQUEST_TYPE, request(service)["body"], now=T0 + 1000))
    with pytest.raises(SignatureError, match="future"):
        await service.key_request(future)
    long = dict(sealed(wire.KEY_REQUEST_TYPE, request(service)["body"], ttl=86400))
    with pytest.raises(SignatureError, match="at most"):
        await service.key_request(long)
    assert core.keys == 0


async def test_requests_for_another_moderator_bad_fields_or_a_closed_offer_are_refused(service, core):
    with pytest.raises(ValidationError) as caught:
        await service.key_request(request(service, moderator="c" * 56))
    assert "moderator" in caught.value.fields
    bad = request(service, amount_sat=0, buyer="02zz", timeout_blocks=70000, network="moon", extra=1)
    with pytest.raises(ValidationError) as caught:
        await service.key_request(bad)
    assert {"amount_sat", "buyer", "timeout_blocks", "network", "extra"} <= set(caught.value.fields)
    with pytest.raises(ValidationError, match="refund_address"):
        await service.key_request(request(service, refund_address="bc1qnotregtest"))
    with pytest.raises(ValidationError, match="network"):
        await service.key_request(request(service, network="main"))
    await service.set_offer({"enabled": False})
    with pytest.raises(NotFound):
        await service.key_request(request(service))
    assert core.keys == 0


async def test_no_bitcoin_core_means_no_keys(db, clock):
    svc = ModeratorService(db, None, StoreKey.generate(), clock)
    await svc.set_offer({"enabled": True})
    with pytest.raises(Unavailable):
        await svc.key_request(request(svc))


# -- cases -----------------------------------------------------------------------------------------------
async def keyed(service: ModeratorService, order_id: str = "00112233aabbccdd") -> Order:
    answer = await service.key_request(request(service, order_id=order_id))
    key = wire.read_key_answer(envelope.open_(dict(answer), now=T0), answer["body"]["reply_to"])
    base = sample_order()
    (case,) = [c for c in await service.cases() if c.order_id == order_id]
    return dataclasses.replace(
        base,
        id=order_id,
        store=VENDOR_KEY.onion,
        amount_sat=Sats(100_000),
        refund_address=REFUND,
        escrow=case.escrow,
        moderator=key.terms,
        funding=Funding(Sats(100_000), (("ab" * 32, 0, 100_000),), 3, 200),
        dispute=Dispute(Party.BUYER, T0, ((Party.BUYER, "never arrived"), (Party.VENDOR, "sent on Monday"))),
    )


async def test_escrow_and_poll_answer_the_state(service, clock):
    order = await keyed(service)
    env = case_env(service, "escrow", descriptor=order.escrow.descriptor)
    answer = await service.case_message(env)
    body = envelope.open_(dict(answer), now=clock(), expected_type=wire.ANSWER_TYPE)["body"]
    assert (body["state"], body["kind"], body["reply_to"]) == ("open", "escrow", env["sig"])
    with pytest.raises(Conflict):
        await service.case_message(case_env(service, "escrow", descriptor="wsh(other)"))
    poll = await service.case_message(case_env(service, "poll"))
    assert poll["body"]["state"] == "open" and poll["body"]["psbt"] is None
    with pytest.raises(NotFound):
        await service.case_message(case_env(service, "poll", order_id="99999999"))
    with pytest.raises(ValidationError):
        await service.case_message(case_env(service, "verdict"))


async def test_a_case_of_another_store_is_not_found(service):
    await keyed(service)
    other = StoreKey.generate()
    body = {"moderator": service.onion, "order_id": "00112233aabbccdd", "kind": "poll"}
    with pytest.raises(NotFound):
        await service.case_message(dict(sealed(wire.CASE_TYPE, body, key=other)))


async def test_a_refund_before_accept_by_is_refused(service):
    await keyed(service)
    with pytest.raises(Conflict, match="may still accept"):
        await service.case_message(case_env(service, "refund", psbt="cHNidP8=", accept_by=T0 + 60))


def dispute_body(order: Order, vendor_address: str = VENDOR_PAYOUT) -> dict[str, object]:
    from node.payments import codec

    assert order.dispute is not None
    return {
        "opened_by": "buyer",
        "statements": [[p.value, t] for p, t in order.dispute.statements],
        "vendor_address": vendor_address,
        "order": codec.to_plain(dataclasses.replace(order, token_hash="", ship_to_sealed="")),
    }


async def test_a_dispute_is_recorded_and_checked_against_the_case(service):
    order = await keyed(service)
    answer = await service.case_message(case_env(service, "dispute", **dispute_body(order)))
    assert answer["body"]["state"] == "disputed"
    (case,) = await service.disputes()
    assert case.statements == order.dispute.statements and case.opened_by is Party.BUYER
    assert case.vendor_address == VENDOR_PAYOUT and case.order is not None and case.order.id == order.id
    wrong = dataclasses.replace(order, refund_address=VENDOR_PAYOUT)
    with pytest.raises(ValidationError, match="refund address"):
        await service.case_message(case_env(service, "dispute", **dispute_body(wrong)))
    with pytest.raises(ValidationError, match="vendor_address"):
        await service.case_message(case_env(service, "dispute", **dispute_body(order, "nonsense")))
    with pytest.raises(Conflict, match="disputed"):
        await service.case_message(case_env(service, "refund", psbt="cHNidP8=", accept_by=T0 - 1))


async def test_decide_checks_the_sum_and_the_state(service, core):
    order = await keyed(service)
    (case,) = await service.cases()
    with pytest.raises(Conflict, match="only a disputed case"):
        await service.decide(case.id, 50_000, 47_000)
    await service.case_message(case_env(service, "dispute", **dispute_body(order)))
    with pytest.raises(Conflict, match="holds nothing"):
        await service.decide(case.id, 50_000, 47_000)
    core.utxos = [ports.Utxo("ab" * 32, 0, 100_000, 3, case.escrow.address)]
    with pytest.raises(ValidationError, match="97000"):
        await service.decide(case.id, 50_000, 50_000)
    with pytest.raises(ValidationError):
        await service.decide(case.id, -1, "x")
    with pytest.raises(NotFound):
        await service.decide("nope", 1, 1)


# -- the vendor's client ---------------------------------------------------------------------------------
class FakeMarket:
    async def key(self, onion: str) -> StoreKey:
        assert onion == VENDOR_KEY.onion
        return VENDOR_KEY


class InProcess:
    """``ports.Http`` straight into the service's handlers (the HTTP test runs the real node app)."""

    def __init__(self, service: ModeratorService, tamper=None) -> None:
        self.service = service
        self.tamper = tamper

    async def get(self, url: str, **_: object) -> HttpReply:
        try:
            env = await self.service.signed_offer()
        except NotFound as exc:
            return HttpReply(404, json.dumps(exc.to_json()).encode(), {})
        return HttpReply(200, crypto.canonical_json(env), {})

    async def post(self, url: str, body: bytes, **_: object) -> HttpReply:
        handler = self.service.key_request if url.endswith("/key") else self.service.case_message
        try:
            answer = dict(await handler(envelope.loads(body)))
        except (BadRequest, Conflict, NotFound) as exc:
            return HttpReply(exc.status, json.dumps(exc.to_json()).encode(), {})
        if self.tamper:
            answer = self.tamper(answer)
        return HttpReply(200, crypto.canonical_json(answer), {})

    async def close(self) -> None:
        return None


def client(service, clock, tamper=None) -> ModeratorClient:
    return ModeratorClient(InProcess(service, tamper), FakeMarket(), clock)


def details() -> wire.KeyRequest:
    return wire.KeyRequest(Sats(100_000), REFUND, BUYER, VENDOR, VENDOR2, 144, "regtest")


async def test_the_client_gets_offers_keys_and_answers(service, clock):
    c = client(service, clock)
    assert await c.offer(service.onion) == await service.offer()
    terms = await c.request_key(VENDOR_KEY.onion, service.onion, "00112233aabbccdd", details())
    assert terms.onion == service.onion and terms.fee_sat == 1000
    order = await keyed(service)
    assert order.moderator == terms
    assert (await c.escrow(order)).state == "open"
    answer = await c.dispute(order, VENDOR_PAYOUT)
    assert (answer.state, answer.kind, answer.psbt) == ("disputed", "dispute", None)
    assert (await c.poll(order)).state == "disputed"
    with pytest.raises(Conflict, match="refused"):
        await c.refund(dataclasses.replace(order, accept_by=T0 - 1), "cHNidP8=")
    await service.set_offer({"enabled": False})
    with pytest.raises(NotFound):
        await c.offer(service.onion)


def _resigned(answer: dict[str, object], key: StoreKey, **body: object) -> dict[str, object]:
    return dict(
        envelope.seal(
            key,
            str(answer["type"]),
            {**answer["body"], **body},
            seq=int(answer["seq"]),
            issued_at=int(answer["issued_at"]),
            expires_at=int(answer["expires_at"]),
        )
    )


async def test_the_client_refuses_answers_it_cannot_trust(service, clock):
    impostor = StoreKey.generate()
    c = client(service, clock, tamper=lambda a: _resigned(a, impostor))
    with pytest.raises(SignatureError, match="not by the moderator"):
        await c.request_key(VENDOR_KEY.onion, service.onion, "00112233aabbccdd", details())
    c = client(service, clock, tamper=lambda a: {**a, "body": {**a["body"], "pubkey": pubkey(99)}})
    with pytest.raises(SignatureError):
        await c.request_key(VENDOR_KEY.onion, service.onion, "00112233aabbccdd", details())
    moderator = service._key  # the real key, answering another request
    c = client(service, clock, tamper=lambda a: _resigned(a, moderator, reply_to="x"))
    with pytest.raises(SignatureError, match="another message"):
        await c.request_key(VENDOR_KEY.onion, service.onion, "00112233aabbccdd", details())
    wrong = escrow.escrow_address(b"elsewhere", "regtest")
    c = client(service, clock, tamper=lambda a: _resigned(a, moderator, address=wrong))
    with pytest.raises(SignatureError, match="computed escrow"):
        await c.request_key(VENDOR_KEY.onion, service.onion, "00112233aabbccdd", details())


async def test_the_client_maps_refusals_and_silence(clock):
    class Replies:
        def __init__(self, reply: HttpReply | None) -> None:
            self.reply = reply

        async def get(self, url: str, **_: object) -> HttpReply:
            if self.reply is None:
                raise Unreachable(f"{url} did not answer")
            return self.reply

        post = None

    onion = StoreKey.generate().onion
    for reply, error in [
        (None, Unreachable),
        (HttpReply(502, b"<html>", {}), Unreachable),
        (HttpReply(409, b'{"error":"busy","code":"conflict"}', {}), Conflict),
        (HttpReply(422, b'{"error":"fee","code":"psbt_refused"}', {}), PsbtRefused),
        (HttpReply(400, b"garbage", {}), BadRequest),
        (HttpReply(200, b"{}", {}), ValidationError),
    ]:
        with pytest.raises(error):
            await ModeratorClient(Replies(reply), FakeMarket(), clock).offer(onion)
    with pytest.raises(Unreachable, match="tor"):
        await ModeratorClient(None, FakeMarket(), clock).offer(onion)


def test_terms_hash_is_sha256_of_the_text():
    assert wire.terms_hash("x") == "sha256:" + hashlib.sha256(b"x").hexdigest()


async def test_key_requests_per_store_are_limited(service, core, clock, monkeypatch):
    from node.payments import moderation

    monkeypatch.setattr(moderation, "MAX_KEYS_PER_HOUR", 2)
    await service.key_request(request(service, order_id="0000000000000001"))
    await service.key_request(request(service, order_id="0000000000000002"))
    with pytest.raises(Conflict, match="within an hour"):
        await service.key_request(request(service, order_id="0000000000000003"))
    clock.now = T0 + 3601
    fresh = dict(sealed(wire.KEY_REQUEST_TYPE, request(service, order_id="0000000000000003")["body"], now=clock.now))
    await service.key_request(fresh)
    assert core.keys == 3


async def test_a_restarted_service_keeps_cases_and_its_replay_memory(tmp_path, core, clock):
    key = StoreKey.generate()
    path = tmp_path / "restart.sqlite"
    db = SQLiteDatabase(path, MIGRATIONS)
    await db.open()
    svc = ModeratorService(db, core, key, clock)
    await svc.set_offer({"enabled": True, "fee_percent": 1})
    env = request(svc)
    first = await svc.key_request(env)
    await db.close()
    db = SQLiteDatabase(path, MIGRATIONS)
    await db.open()
    try:
        again = ModeratorService(db, core, key, clock)
        assert (await again.offer()).fee_percent == 1
        assert await again.key_request(env) == first and core.keys == 1
        (case,) = await again.cases()
        assert case.escrow.descriptor == first["body"]["descriptor"]
    finally:
        await db.close()


async def test_new_cases_are_limited_for_the_whole_node(service, core, monkeypatch):
    from node.payments import moderation

    monkeypatch.setattr(moderation, "MAX_CASES_PER_HOUR", 2)
    stores = [StoreKey.generate() for _ in range(3)]  # each a fresh key: the per-store limit never bites
    for i, store in enumerate(stores[:2]):
        await service.key_request(dict(sealed(wire.KEY_REQUEST_TYPE, request(service, f"{i:016x}")["body"], key=store)))
    third = dict(sealed(wire.KEY_REQUEST_TYPE, request(service, "00000000000000ff")["body"], key=stores[2]))
    with pytest.raises(Conflict, match="all stores"):
        await service.key_request(third)
    assert core.keys == 2 and len(core.watched) == 2


def _refund(svc: ModeratorService, clock: Clock, accept_by: int) -> dict[str, object]:
    body = {"moderator": svc.onion, "order_id": "00112233aabbccdd", "kind": "refund", "psbt": "cHNidP8="}
    return dict(sealed(wire.CASE_TYPE, {**body, "accept_by": accept_by}, now=clock.now))


async def test_the_refund_window_is_timed_by_the_moderator_not_the_requester(service, core, clock):
    await keyed(service)
    (case,) = await service.cases()
    with pytest.raises(Conflict, match="not seen the escrow"):
        await service.case_message(_refund(service, clock, accept_by=0))  # "accept_by passed long ago"
    core.utxos = [ports.Utxo("ab" * 32, 0, 100_000, 1, case.escrow.address)]
    clock.now = T0 + 100
    with pytest.raises(Conflict, match="first saw the escrow funded"):
        await service.case_message(_refund(service, clock, accept_by=0))
    (case,) = await service.cases()
    assert case.funded_at == T0 + 100  # recorded although the request was refused
    clock.now = T0 + 100 + 3599
    with pytest.raises(Conflict, match="first saw"):
        await service.case_message(_refund(service, clock, accept_by=0))
    clock.now = T0 + 100 + 3600
    with pytest.raises(PsbtRefused, match="reached the PSBT checks"):  # the window is open: on to the PSBT
        await service.case_message(_refund(service, clock, accept_by=0))


async def test_the_declared_accept_window_counts_from_the_moderators_sighting(service, core, clock):
    body = request(service, accept_window=2 * 86400)["body"]
    await service.key_request(dict(sealed(wire.KEY_REQUEST_TYPE, body)))
    (case,) = await service.cases()
    assert case.accept_window == 2 * 86400
    assert await service.watch_once() == 0
    core.utxos = [ports.Utxo("ab" * 32, 0, 100_000, 0, case.escrow.address)]
    clock.now = T0 + 10
    assert await service.watch_once() == 1 and await service.watch_once() == 0
    (case,) = await service.cases()
    assert case.funded_at == T0 + 10
    clock.now = T0 + 10 + 86400  # a day later: past the minimum hour, not past the declared window
    with pytest.raises(Conflict, match="first saw"):
        await service.case_message(_refund(service, clock, accept_by=T0))
    clock.now = T0 + 10 + 2 * 86400
    with pytest.raises(PsbtRefused, match="reached the PSBT checks"):
        await service.case_message(_refund(service, clock, accept_by=T0))
    bad = request(service, "0000000000000009", accept_window=-1)["body"]
    with pytest.raises(ValidationError) as refused:
        await service.key_request(dict(sealed(wire.KEY_REQUEST_TYPE, bad, now=clock.now)))
    assert set(refused.value.fields) == {"accept_window"}


async def test_no_dispute_or_decision_once_the_refund_is_signed(service, db):
    order = await keyed(service)
    (case,) = await service.cases()
    signed = dataclasses.replace(case, state=CaseState.REFUND_SIGNED, psbt="cHNidP8=", refund_signed_at=T0)
    await ModerationStore(db).update_case(signed, expect=CaseState.OPEN)
    with pytest.raises(Conflict, match=r"this order is being refunded; the refund signed at .* pays the buyer"):
        await service.case_message(case_env(service, "dispute", **dispute_body(order)))
    with pytest.raises(Conflict, match="being refunded"):
        await service.decide(case.id, 50_000, 47_000)
    assert (await service.case(case.id)).state is CaseState.REFUND_SIGNED


async def test_watching_skips_old_cases_and_a_refund_request_still_looks(service, core, clock):
    await keyed(service)
    (case,) = await service.cases()
    core.utxos = [ports.Utxo("ab" * 32, 0, 100_000, 1, case.escrow.address)]
    clock.now = T0 + 15 * 86400  # an order expired unpaid long ago, paid late
    assert await service.watch_once() == 0
    with pytest.raises(Conflict, match="first saw the escrow funded"):
        await service.case_message(_refund(service, clock, accept_by=T0))
    assert (await service.case(case.id)).funded_at == clock.now
