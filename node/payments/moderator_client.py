"""The vendor's side of moderation: asking a moderator's node (over its node onion) for keys and decisions.

Every message is a ``pasar.moderation.*`` envelope signed by the store's key
(``Market.key``); every answer must be signed by the moderator's node onion
and name the message it answers (``reply_to``), or it is refused. Errors:
``Unreachable`` when the moderator's node does not answer (or answers 5xx),
``Conflict``/``PsbtRefused``/``NotFound``/``BadRequest`` when it refuses with
a reason (its message is kept), ``SignatureError``/``ValidationError`` when
the answer does not verify.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping

from ..core import crypto, envelope, ports
from ..core.errors import BadRequest, Conflict, NotFound, PasarError, PsbtRefused, SignatureError, Unreachable
from ..core.models import Envelope, HttpReply
from ..market.market import Market
from . import codec, escrow
from . import moderation_wire as wire
from .models import ModeratorOffer, ModeratorTerms, Order, SignedTerms
from .moderation_wire import CaseAnswer, KeyAnswer, KeyRequest

log = logging.getLogger(__name__)

__all__ = ["CaseAnswer", "KeyAnswer", "KeyRequest", "ModeratorClient"]

DEADLINE = 90.0  # seconds for one exchange over tor


def _now() -> int:
    return int(time.time())


class ModeratorClient:
    """``http`` reaches other nodes' onions (None: tor is off, every moderator is ``Unreachable``)."""

    def __init__(self, http: ports.Http | None, market: Market, clock: Callable[[], int] = _now) -> None:
        self._http = http
        self._market = market
        self._clock = clock
        self._seq = wire.SeqSource(clock)

    def attach(self, http: ports.Http | None) -> None:
        """Use ``http`` from now on (the app opens payments before its outbound HTTP exists)."""
        self._http = http

    # -- the offer -------------------------------------------------------------------------------
    async def offer(self, onion: str) -> ModeratorOffer:
        """The moderator's signed offer, verified against ``onion``; ``NotFound`` when it offers none."""
        reply = await self._http_or_fail().get(
            f"http://{onion}.onion{wire.OFFER_PATH}", deadline=DEADLINE, attempts=2, max_bytes=wire.MAX_BYTES
        )
        if reply.status == 404:
            raise NotFound(f"{onion}.onion does not offer moderation (any more): choose another moderator")
        env = self._answer(reply, onion, wire.OFFER_TYPE)
        return wire.read_offer(env)

    # -- keys ------------------------------------------------------------------------------------
    async def request_key(self, store: str, moderator_onion: str, order_id: str, details: KeyRequest) -> ModeratorTerms:
        """The moderator's fresh key for ``order_id``, its fee and terms hash (see ``request_escrow_key``)."""
        return (await self.request_escrow_key(store, moderator_onion, order_id, details)).terms

    async def signed_key(self, store: str, moderator_onion: str, order_id: str, details: KeyRequest) -> SignedTerms:
        """As ``request_key``, with the moderator's signed answer kept (canonical JSON) for a buyer's node."""
        key, answer = await self._key_answer(store, moderator_onion, order_id, details)
        return SignedTerms(terms=key.terms, answer=crypto.canonical_json(answer).decode("utf-8"))

    async def request_escrow_key(
        self, store: str, moderator_onion: str, order_id: str, details: KeyRequest
    ) -> KeyAnswer:
        """As ``request_key``, with the escrow descriptor and address the moderator computed and now watches.

        The address is checked here against the escrow built from the keys: a moderator answering with
        another escrow is refused (``SignatureError``). Sending the same request again gets the same key.
        """
        return (await self._key_answer(store, moderator_onion, order_id, details))[0]

    async def _key_answer(
        self, store: str, moderator_onion: str, order_id: str, details: KeyRequest
    ) -> tuple[KeyAnswer, Envelope]:
        body = wire.key_request_body(moderator_onion, order_id, details)
        env, answer = await self._exchange(store, moderator_onion, wire.KEY_PATH, wire.KEY_REQUEST_TYPE, body)
        if answer["type"] != wire.KEY_TYPE:
            raise SignatureError(f"{moderator_onion}.onion answered a key request with {answer['type']!r}")
        key = wire.read_key_answer(answer, env["sig"])
        if key.order_id != order_id or key.store != store:
            raise SignatureError(f"{moderator_onion}.onion answered for another order")
        expected = escrow.escrow_address(
            escrow.witness_script(
                details.buyer, details.vendor, key.terms.pubkey, details.vendor_timeout, details.timeout_blocks
            ),
            details.network,
        )
        if key.address != expected:
            raise SignatureError(f"{moderator_onion}.onion computed escrow {key.address}, not {expected}")
        return key, answer

    # -- cases -----------------------------------------------------------------------------------
    async def send(self, store: str, moderator_onion: str, kind: str, body: Mapping[str, object]) -> CaseAnswer:
        """A ``pasar.moderation.case`` of ``kind`` about ``body["order_id"]``; the verified answer."""
        full = {**body, "kind": kind, "moderator": moderator_onion}
        env, answer = await self._exchange(store, moderator_onion, wire.CASE_PATH, wire.CASE_TYPE, full)
        if answer["type"] != wire.ANSWER_TYPE:
            raise SignatureError(f"{moderator_onion}.onion answered a case message with {answer['type']!r}")
        case = wire.read_case_answer(answer, env["sig"])
        if case.order_id != body.get("order_id") or case.kind != kind:
            raise SignatureError(f"{moderator_onion}.onion answered for another order or message")
        return case

    async def escrow(self, order: Order) -> CaseAnswer:
        """Confirms the order's escrow with the moderator (it already watches it since the key request)."""
        body = {"order_id": order.id, "descriptor": order.escrow.descriptor}
        return await self.send(order.store, order.moderator.onion, "escrow", body)

    async def refund(self, order: Order, psbt: str) -> CaseAnswer:
        """Asks the moderator to sign ``psbt`` (base64): everything back to the buyer, after ``accept_by``.

        The answer's ``psbt`` carries the moderator's signature; ``Conflict`` while ``accept_by`` is ahead,
        ``PsbtRefused`` (the moderator's reason) when the PSBT does not pass its checks.
        """
        body = {"order_id": order.id, "psbt": psbt, "accept_by": order.accept_by}
        return await self.send(order.store, order.moderator.onion, "refund", body)

    async def dispute(self, order: Order, vendor_address: str) -> CaseAnswer:
        """Opens (or adds statements to) the dispute: the order record, both parties' statements, and the
        address the vendor's part of a split goes to. ``order.dispute`` must be set."""
        if order.dispute is None:
            raise Conflict("open the dispute on the order before sending it to the moderator")
        body = {
            "order_id": order.id,
            "opened_by": order.dispute.opened_by.value,
            "statements": [[party.value, text] for party, text in order.dispute.statements],
            "vendor_address": vendor_address,
            "order": codec.to_plain(_shareable(order)),
        }
        return await self.send(order.store, order.moderator.onion, "dispute", body)

    async def poll(self, order: Order) -> CaseAnswer:
        """The case's state; once decided, the split and the moderator-signed PSBT."""
        return await self.send(order.store, order.moderator.onion, "poll", {"order_id": order.id})

    # -- plumbing --------------------------------------------------------------------------------
    def _http_or_fail(self) -> ports.Http:
        if self._http is None:
            raise Unreachable("moderators cannot be reached: tor is not running on this node")
        return self._http

    async def _exchange(
        self, store: str, moderator: str, path: str, type_: str, body: Mapping[str, object]
    ) -> tuple[Envelope, Envelope]:
        http = self._http_or_fail()
        key = await self._market.key(store)
        env = wire.sealed(key, type_, body, now=self._clock(), seq=self._seq())
        reply = await http.post(
            f"http://{moderator}.onion{path}",
            crypto.canonical_json(env),
            deadline=DEADLINE,
            attempts=2,
            max_bytes=wire.MAX_BYTES,
        )
        return env, self._answer(reply, moderator, None)

    def _answer(self, reply: HttpReply, moderator: str, type_: str | None) -> Envelope:
        if reply.status != 200:
            raise _refusal(reply, moderator)
        env = envelope.open_(envelope.loads(reply.body), now=self._clock(), expected_type=type_)
        if env["store"] != moderator:
            raise SignatureError(f"the answer is signed by {env['store']}, not by the moderator {moderator}")
        return env


def _shareable(order: Order) -> Order:
    """The order record as the moderator gets it: no buyer secret hash, no sealed address or messages."""
    return dataclasses.replace(order, token_hash="", ship_to_sealed="", messages=(), pending=None, extra={})


def _refusal(reply: HttpReply, moderator: str) -> PasarError:
    """The moderator's error answer as our error (its message kept); 5xx and garbage are ``Unreachable``."""
    message, code = f"HTTP {reply.status}", ""
    try:
        data: object = json.loads(reply.body)
    except (ValueError, UnicodeDecodeError):
        data = None  # not the error JSON: the status alone says it
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        message, code = data["error"][:500], str(data.get("code", ""))
    said = f"the moderator {moderator}.onion refused: {message}"
    if reply.status >= 500 or reply.status in (421, 429):
        # Its words stay in our log: a buyer reading them would learn nothing useful, and another node's
        # text is not ours to show.
        log.info("the moderator %s.onion answered %s: %s", moderator, reply.status, message)
        return Unreachable(f"the moderator {moderator}.onion could not answer now; try again later")
    if reply.status == 409:
        return Conflict(said)
    if reply.status == 404:
        return NotFound(said)
    if code == "psbt_refused":
        return PsbtRefused(said)
    return BadRequest(said)
