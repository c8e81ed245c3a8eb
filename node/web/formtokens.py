"""Form tokens that need no account: an HMAC over when a form was shown and what it is about.

Tor Browser in its safest mode sends ``Origin: null`` and no ``Sec-Fetch-*``
on a same-origin form POST from a page that sends no referrer, so a public
form (the directory's report form, a store's checkout form) cannot be told
apart from a cross-site post by its headers. It carries a token instead:
``<issued>.<hmac>``, under a secret made when the node starts, over the issue
time and the form's subject (a listing, a store), valid ``ttl`` seconds.
Nothing is stored per token; a restart of the node makes old forms expire.
``OncePerForm`` makes a form sent twice give one result (one order).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

TOKEN_TTL = 3600
MAX_REMEMBERED = 4096  # forms whose outcome OncePerForm remembers (a few hundred bytes each)


@dataclass
class FormTokens:
    """``<issued>.<hmac>`` over the issue time and what the form is about; valid ``ttl`` seconds."""

    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    ttl: int = TOKEN_TTL
    clock: Callable[[], float] = time.time

    def _mac(self, issued: int, subject: str) -> str:
        return hmac.new(self.secret, f"{issued}:{subject}".encode(), hashlib.sha256).hexdigest()

    def issue(self, subject: str) -> str:
        issued = int(self.clock())
        return f"{issued}.{self._mac(issued, subject)}"

    def valid(self, token: str, subject: str) -> bool:
        stamp, _, mac = token.partition(".")
        if not stamp.isdigit() or len(stamp) > 12:
            return False
        issued = int(stamp)
        if not 0 <= self.clock() - issued <= self.ttl:
            return False
        return hmac.compare_digest(mac.encode(), self._mac(issued, subject).encode())


@dataclass
class _Attempt:
    done: asyncio.Event = field(default_factory=asyncio.Event)
    result: str | None = None  # what the first sending made (for checkout: the order's secret token)


class OncePerForm:
    """One result per form shown: a form sent twice (a double click, a resend while a slow answer comes
    over Tor) gets what its first sending made; for checkout, the same order, not a second one holding
    more stock.

    A form is known by its nonce (each rendering has its own, under the form token's HMAC). A sending
    that made nothing (refused, paused) is forgotten, so the form can be corrected and sent again.
    """

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._limit = limit
        self._attempts: OrderedDict[str, _Attempt] = OrderedDict()

    async def run(self, nonce: str, make: Callable[[], Awaitable[str]]) -> str:
        while (earlier := self._attempts.get(nonce)) is not None:
            await earlier.done.wait()
            if earlier.result is not None:
                return earlier.result
        attempt = self._attempts[nonce] = _Attempt()
        while len(self._attempts) > self._limit:
            self._attempts.popitem(last=False)
        try:
            attempt.result = await make()
            return attempt.result
        finally:
            if attempt.result is None and self._attempts.get(nonce) is attempt:
                del self._attempts[nonce]
            attempt.done.set()
