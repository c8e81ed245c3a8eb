"""The moderator's side: the offer, keys for orders, refunds after the accept window, disputes and decisions.

A node offering moderation answers other nodes on its node onion
(``node/web/nodeonion.py``): a signed offer, a key per order, and case
messages from the vendor's node (docs/protocol.md, "Moderation"). Every
message is verified (shape, signature, freshness, lifetime) before anything
is read from it; an envelope seen before gets the answer it got then (a
retransmission), another envelope reusing its (signer, seq) is refused.

Nothing is signed without this node's own checks: the escrow is rebuilt from
the keys and checked against its Bitcoin Core, then watched by its watch-only
wallet; a refund is signed only after a window this node times itself
(``moderation_cases``: from when its own wallet first saw the escrow funded)
and only if it pays the buyer's refund address everything this node sees in
the escrow minus a fee its own Core finds sane; a split only as the operator
decided, and never once a refund is signed. The node key signs the messages;
the node's Bitcoin Core signing wallet signs the PSBTs.

New cases are limited per store and for the whole node (each costs a
``getnewaddress`` and an ``importdescriptors``): a store onion is a free
ed25519 key, so the per-store limit alone does not bound the work. Checking
that the store lists this moderator would not bound it either (a fresh key can
sign a profile naming any moderator) and would cost a Tor round trip per
request, so it is not done.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from ..core import ports
from ..core.crypto import StoreKey
from ..core.errors import Conflict, NotFound, SignatureError, Unavailable, ValidationError, WalletError
from ..core.models import Envelope, Sats
from . import escrow, moderation_payouts
from . import moderation_cases as rules
from . import moderation_wire as wire
from .models import KeyRef, ModeratorOffer, ModeratorTerms, Party
from .moderation_store import Case, CaseState, ModerationSettings, ModerationStore
from .moderation_wire import KeyAnswer, KeyRequest

__all__ = ["Case", "CaseState", "ModerationSettings", "ModeratorService"]

ANSWER_TTL = 3 * 3600  # an answer outlives every retransmission of the message it answers
MAX_FEE_SAT = 100_000_000
MAX_KEYS_PER_HOUR = 120  # per store: each key request adds a descriptor to the watch-only wallet
MAX_CASES_PER_HOUR = 600  # the whole node, every store together (a store onion is a free key)
WATCH_INTERVAL = 60  # seconds between two looks for newly funded escrows (``run``)
WATCH_DAYS = 14  # ``watch_once`` looks at the open cases of this many days
log = logging.getLogger(__name__)
_SETTING_NAMES = {"enabled", "fee_percent", "fee_sat", "terms"}


def _now() -> int:
    return int(time.time())


class ModeratorService:
    """``bitcoin`` None: keys and signatures are refused (``Unavailable``) until the node has Bitcoin Core."""

    def __init__(
        self,
        db: ports.Database,
        bitcoin: ports.Bitcoin | None,
        node_key: StoreKey,
        clock: Callable[[], int] = _now,
        *,
        network: str | None = None,
        max_fee_rate: int = 500,
    ) -> None:
        self._store = ModerationStore(db)
        self._bitcoin = bitcoin
        self._key = node_key
        self._clock = clock
        self._network = network
        self.max_fee_rate = max_fee_rate
        self._seq = wire.SeqSource(clock)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    @property
    def onion(self) -> str:
        return self._key.onion

    # -- the offer -------------------------------------------------------------------------------
    async def settings(self) -> ModerationSettings:
        return await self._store.settings()

    async def offer(self) -> ModeratorOffer:
        s = await self._store.settings()
        return ModeratorOffer(self.onion, s.enabled, s.fee_percent, s.fee_sat, s.terms)

    async def set_offer(self, body: object) -> ModeratorOffer:
        """Changes the named settings (``enabled``, ``fee_percent``, ``fee_sat``, ``terms``); every problem at once."""
        if not isinstance(body, dict):
            raise ValidationError({"body": "must be an object of enabled, fee_percent, fee_sat and terms"})
        f = wire.Fields(body, "moderation settings")
        f.exact(_SETTING_NAMES)
        s = await self._store.settings()
        if "enabled" in body:
            if not isinstance(body["enabled"], bool):
                f.problems["enabled"] = "must be true or false"
            s = replace(s, enabled=body["enabled"] is True)
        if "fee_percent" in body:
            s = replace(s, fee_percent=f.number("fee_percent", 0, 50))
        if "fee_sat" in body:
            s = replace(s, fee_sat=Sats(f.number("fee_sat", 0, MAX_FEE_SAT)))
        if "terms" in body:
            s = replace(s, terms=f.text("terms", limit=wire.MAX_TERMS, empty=True).strip())
        f.done()
        await self._store.put_settings(s, now=self._clock())
        return await self.offer()

    async def signed_offer(self) -> Envelope:
        """The offer as ``pasar.moderation`` signed by the node key; ``NotFound`` while moderation is off."""
        offer = await self.offer()
        if not offer.enabled:
            raise NotFound("this node does not offer moderation")
        now = self._clock()
        return wire.sealed(
            self._key, wire.OFFER_TYPE, wire.offer_body(offer), now=now, seq=self._seq(), ttl=wire.OFFER_TTL
        )

    # -- messages from vendors' nodes ------------------------------------------------------------
    async def key_request(self, env: object) -> Envelope:
        """A ``pasar.moderation.key-request``: a fresh key of the signing wallet for the order, the escrow
        built and watched; answered with ``pasar.moderation.key``. The same order asked again gets the same key."""
        return await self._handle(env, wire.KEY_REQUEST_TYPE, self._on_key_request)

    async def case_message(self, env: object) -> Envelope:
        """A ``pasar.moderation.case`` (kind escrow, refund, dispute or poll); answered with
        ``pasar.moderation.answer``."""
        return await self._handle(env, wire.CASE_TYPE, self._on_case)

    async def _handle(self, raw: object, type_: str, handler: Callable[[Envelope], Awaitable[Envelope]]) -> Envelope:
        now = self._clock()
        env = wire.opened(raw, now=now, expected_type=type_)
        digest = wire.digest(env)
        prior = await self._store.seen(env["store"], env["seq"])
        if prior is None:
            answer = await handler(env)
            prior = await self._store.remember(env, digest, answer, now=now)
        if prior.digest != digest:
            raise SignatureError("another message already used this seq: replay refused (sign a new message)")
        return prior.answer

    def _addressed(self, moderator: str) -> None:
        if moderator != self.onion:
            raise ValidationError({"moderator": f"this message is for {moderator}, not for this node ({self.onion})"})

    def _lock(self, store: str, order_id: str) -> asyncio.Lock:
        """One lock per order: its messages and the operator's decision run one at a time."""
        if len(self._locks) > 1000:
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        return self._locks.setdefault((store, order_id), asyncio.Lock())

    async def _on_key_request(self, env: Envelope) -> Envelope:
        moderator, order_id, req = wire.read_key_request(env["body"])
        self._addressed(moderator)
        async with self._lock(env["store"], order_id):
            case = await self._store.case_for(env["store"], order_id)
            if case is None:
                case = await self._new_case(env["store"], order_id, req)
            elif not rules.same_request(case, req):
                raise Conflict(f"order {order_id} already has this moderator's key, for other keys or amounts")
        terms = ModeratorTerms(self.onion, case.escrow.moderator, case.fee_percent, case.fee_sat, case.terms_hash)
        answer = KeyAnswer(terms, order_id, case.store, case.escrow.descriptor, case.escrow.address)
        return self._seal(wire.KEY_TYPE, wire.key_answer_body(answer, env["sig"]))

    async def _new_case(self, store: str, order_id: str, req: KeyRequest) -> Case:
        offer = await self.offer()
        if not offer.enabled:
            raise NotFound("this node does not offer moderation (any more): choose another moderator")
        bitcoin = self._wallet()
        if await self._store.recent_cases(store, self._clock() - 3600) >= MAX_KEYS_PER_HOUR:
            raise Conflict(f"this store asked for {MAX_KEYS_PER_HOUR} keys within an hour: try again later")
        if await self._store.recent_cases(None, self._clock() - 3600) >= MAX_CASES_PER_HOUR:
            raise Conflict(
                f"this moderator gave {MAX_CASES_PER_HOUR} keys within an hour (all stores): try again later "
                "or choose another moderator"
            )
        network = await self.network()
        if req.network != network:
            raise ValidationError({"network": f"this moderator's Bitcoin Core runs {network}, not {req.network}"})
        refund = escrow.parse_address(req.refund_address, network)
        key = await bitcoin.new_key()
        mine = KeyRef(key.pubkey, key.origin)
        desc = escrow.descriptor(req.buyer, req.vendor, mine, req.vendor_timeout, req.timeout_blocks)
        checksum = await bitcoin.checksum(desc)
        address = await bitcoin.derive_address(f"{desc}#{checksum}")
        built = escrow.build_escrow(
            req.buyer, req.vendor, mine, req.vendor_timeout, req.timeout_blocks, checksum, network, address
        )
        await bitcoin.watch(built.descriptor)
        now = self._clock()
        case = Case(
            id=secrets.token_hex(8),
            store=store,
            order_id=order_id,
            state=CaseState.OPEN,
            created_at=now,
            updated_at=now,
            network=network,
            amount_sat=req.amount_sat,
            refund_address=refund,
            escrow=built,
            fee_percent=offer.fee_percent,
            fee_sat=offer.fee_sat,
            terms_hash=wire.terms_hash(offer.terms),
            moderator_sat=offer.fee_for(req.amount_sat),
            accept_window=req.accept_window,
        )
        return await self._store.insert_case(case)

    async def _on_case(self, env: Envelope) -> Envelope:
        moderator, order_id, kind = wire.read_case_head(env["body"])
        self._addressed(moderator)
        async with self._lock(env["store"], order_id):
            case = await self._store.case_for(env["store"], order_id)
            if case is None:
                raise NotFound(f"this moderator gave no key for order {order_id} of this store")
            handlers = {"escrow": self._on_escrow, "refund": self._on_refund, "dispute": self._on_dispute}
            if kind in handlers:
                case = await handlers[kind](case, env["body"])
        return self._seal(wire.ANSWER_TYPE, wire.case_answer_body(rules.answer(case, kind), env["sig"]))

    async def _on_escrow(self, case: Case, body: Any) -> Case:
        f = wire.Fields(body, "escrow message")
        descriptor = f.text("descriptor", limit=1000)
        f.exact({"moderator", "order_id", "kind", "descriptor"})
        f.done()
        if descriptor != case.escrow.descriptor:
            raise Conflict(f"the escrow of order {case.order_id} is {case.escrow.descriptor}, not {descriptor}")
        return case

    async def _on_refund(self, case: Case, body: Any) -> Case:
        f = wire.Fields(body, "refund request")
        psbt = f.text("psbt", limit=wire.MAX_BYTES)
        accept_by = f.number("accept_by", 0, 2**40)
        f.exact({"moderator", "order_id", "kind", "psbt", "accept_by"})
        f.done()
        if case.state in (CaseState.DISPUTED, CaseState.DECIDED):
            raise Conflict(f"order {case.order_id} is disputed: the moderator decides its payout")
        now = self._clock()
        if now >= accept_by:  # the requester's accept_by only delays; this node times the window itself
            case = await self._sight(case)
        rules.check_refund_window(case, accept_by, now)
        signed = await moderation_payouts.sign_refund(self._wallet(), case, psbt, max_fee_rate=self.max_fee_rate)
        new = replace(
            case,
            state=CaseState.REFUND_SIGNED,
            updated_at=now,
            accept_by=accept_by,
            psbt=signed,
            refund_signed_at=case.refund_signed_at or now,
        )
        return await self._store.update_case(new, expect=case.state)

    async def _sight(self, case: Case) -> Case:
        """``case``, with ``funded_at`` recorded (stored) when this node's wallet sees its escrow funded first now."""
        seen = await moderation_payouts.sighted(self._wallet(), case, self._clock())
        if seen is None:
            return case
        return await self._store.update_case(seen, expect=case.state)

    async def _on_dispute(self, case: Case, body: Any) -> Case:
        f = wire.Fields(body, "dispute")
        opened_by = f.text("opened_by", limit=10)
        if opened_by and opened_by not in ("buyer", "vendor"):
            f.problems["opened_by"] = 'must be "buyer" or "vendor"'
        statements = wire.read_statements(body.get("statements"), f)
        vendor_address = f.text("vendor_address", limit=100)
        f.exact({"moderator", "order_id", "kind", "opened_by", "statements", "vendor_address", "order"})
        f.done()
        rules.check_not_refunding(case)
        if case.state is CaseState.DECIDED:
            return case  # decided: later statements change nothing; the answer carries the decision
        address = escrow.parse_address(vendor_address, case.network, field="vendor_address")
        order = rules.order_record(case, body.get("order"))
        now = self._clock()
        new = replace(
            case,
            state=CaseState.DISPUTED,
            updated_at=now,
            opened_by=case.opened_by or Party(opened_by),
            disputed_at=case.disputed_at or now,
            statements=statements,
            vendor_address=address,
            order=order,
        )
        return await self._store.update_case(new, expect=case.state)

    # -- the operator ----------------------------------------------------------------------------
    async def cases(self) -> list[Case]:
        return await self._store.cases()

    async def active_cases(self) -> list[Case]:
        """Every case not decided yet (no cap), newest first: the recovery sheet and the re-watch read these."""
        return await self._store.active_cases()

    async def case(self, case_id: str) -> Case:
        return await self._store.case(case_id)

    async def disputes(self) -> list[Case]:
        """Disputed cases waiting for a decision, then decided ones (newest first in each)."""
        return await self._store.cases((CaseState.DISPUTED,)) + await self._store.cases((CaseState.DECIDED,))

    async def decide(self, case_id: str, buyer_sat: object, vendor_sat: object) -> Case:
        """Splits the escrow: ``buyer_sat`` + ``vendor_sat`` + this node's fee must be what the escrow holds.

        The watch-only wallet builds the split PSBT, it is checked, the signing wallet signs it; the
        vendor's node fetches it with its next poll.
        """
        f = wire.Fields({"buyer_sat": buyer_sat, "vendor_sat": vendor_sat}, "decision")
        split = (f.sats("buyer_sat"), f.sats("vendor_sat"))
        f.done()
        case = await self._store.case(case_id)
        async with self._lock(case.store, case.order_id):
            case = await self._store.case(case_id)
            rules.check_not_refunding(case)
            if case.state is not CaseState.DISPUTED:
                raise Conflict(f"case {case_id} is {case.state.value}: only a disputed case is decided (once)")
            signed = await moderation_payouts.sign_split(self._wallet(), case, split, max_fee_rate=self.max_fee_rate)
            now = self._clock()
            new = replace(
                case,
                state=CaseState.DECIDED,
                updated_at=now,
                buyer_sat=split[0],
                vendor_sat=split[1],
                decided_at=now,
                psbt=signed.psbt,
                note=signed.note,
                fee_rate=signed.fee_rate,
                moderator_address=signed.moderator_address,
            )
            stored = await self._store.update_case(new, expect=CaseState.DISPUTED)
        if stored != new:
            raise Conflict(f"case {case_id} changed while deciding: look at it again")
        return stored

    # -- watching --------------------------------------------------------------------------------
    async def watch_once(self) -> int:
        """Records when this node's wallet first sees each open case's escrow funded (the refund window counts
        from then); how many it saw funded now. Cases older than ``WATCH_DAYS`` (orders long expired unpaid) are
        left to the refund request itself, which also looks."""
        seen = 0
        for case in await self._store.unfunded(self._clock() - WATCH_DAYS * 86400):
            async with self._lock(case.store, case.order_id):
                current = await self._store.case(case.id)
                if current.state is CaseState.OPEN and (await self._sight(current)).funded_at is not None:
                    seen += 1
        return seen

    async def run(self, interval: float = WATCH_INTERVAL) -> None:
        """``watch_once`` forever (run it under ``supervised()``); Core being down only skips rounds."""
        down = False
        while True:
            try:
                await self.watch_once()
                down = False
            except WalletError as exc:
                if not down:
                    log.warning("moderation watching paused: %s", exc.message)
                down = True
            await asyncio.sleep(interval)

    # -- helpers ---------------------------------------------------------------------------------
    def _wallet(self) -> ports.Bitcoin:
        if self._bitcoin is None:
            raise Unavailable("this node has no Bitcoin Core configured: it cannot moderate payments now")
        return self._bitcoin

    async def network(self) -> str:
        """The chain of this node's Bitcoin Core as a ``bitcoin_network`` name (asked once)."""
        if self._network is None:
            chain = await self._wallet().chain()
            self._network = "test" if chain in ("test", "testnet4") else "main" if chain == "main" else chain
        return self._network

    def _seal(self, type_: str, body: dict[str, object]) -> Envelope:
        return wire.sealed(self._key, type_, body, now=self._clock(), seq=self._seq(), ttl=ANSWER_TTL)
