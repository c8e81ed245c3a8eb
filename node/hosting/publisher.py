"""Keeps every store's onion service published, whatever happens to tor.

The publisher holds the wanted onions (one ``OnionSpec`` per store) and a
supervisor task: connect to tor (or launch it), publish everything, wait
until the connection drops, back off, repeat. Each store's status is one of
``starting`` (sent to tor), ``published`` (a descriptor reached an HSDir,
from HS_DESC events) or an error with its reason (``StoreStatus``). The tor
adapter is passed in, typed by its port. The app runs ``run`` under
``core.tasks.supervised``, so even a bug outside its own error handling is
logged with its traceback and the loop restarted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from ..core.errors import TorError
from ..core.models import OnionSpec, PublishState, StoreStatus
from ..core.ports import Tor

log = logging.getLogger(__name__)
BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
STABLE_AFTER = 60.0  # seconds a connection must last before the backoff starts over


class TorPhase(Enum):
    STARTING = "starting"
    CONNECTED = "connected"
    ERROR = "error"


@dataclass(frozen=True)
class TorStatus:
    """The control connection's state and, for an error, why."""

    phase: TorPhase
    reason: str = ""

    def __str__(self) -> str:
        """What the API's ``state`` field shows: ``"connected"``, ``"error: <reason>"``..."""
        return f"error: {self.reason}" if self.phase is TorPhase.ERROR else self.phase.value


STARTING = StoreStatus(PublishState.STARTING)
PUBLISHED = StoreStatus(PublishState.PUBLISHED)


@dataclass
class TorState:
    """What the admin page and API show about tor itself."""

    mode: str  # "embedded" | "system"
    state: TorStatus = TorStatus(TorPhase.STARTING)
    bootstrap: int = 0
    summary: str = ""
    version: str = ""
    socks: str = ""
    reconnects: int = 0
    retry_in: float = 0.0  # the last backoff delay

    def as_json(self) -> dict[str, object]:
        return {**self.__dict__, "state": str(self.state), "phase": self.state.phase.value}


@dataclass
class Publisher:
    tor: Tor
    status: dict[str, StoreStatus]  # onion -> status; shared with the web layer
    backoff: Sequence[float] = BACKOFF
    stable_after: float = STABLE_AFTER
    state: TorState = field(init=False)
    wanted: dict[str, OnionSpec] = field(default_factory=dict)
    _published: dict[str, OnionSpec] = field(default_factory=dict)  # what tor has now
    _uploading: set[str] = field(default_factory=set)  # an UPLOAD was seen since the last ADD_ONION
    _upload_at: dict[str, float] = field(default_factory=dict)  # wall-clock time of the last UPLOAD seen
    _lost: asyncio.Event = field(default_factory=asyncio.Event)
    _connected: bool = False
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = TorState(mode="embedded" if self.tor.embedded else "system")

    # -- what the app calls -------------------------------------------------
    async def publish(self, onion: str, spec: OnionSpec | None) -> None:
        """Publish ``onion`` as ``spec`` (replacing what tor has if it differs), or withdraw it (None)."""
        if spec is None:
            self.wanted.pop(onion, None)
        else:
            self.wanted[onion] = spec
        if self._connected:
            await self._sync(onion)
        elif spec is not None:  # published once tor is back; until then say why not
            tor = self.state.state
            self.status[onion] = StoreStatus.error(tor.reason) if tor.phase is TorPhase.ERROR else STARTING

    async def start(self) -> None:
        """The first connection; a TorError here stops the node with its message."""
        await self._connect()

    async def run(self) -> None:
        """Reconnect whenever the connection drops, with backoff; runs until cancelled.

        The backoff resets only after a connection stayed up ``stable_after``
        seconds, so a tor that dies right after each start is not relaunched in a
        tight loop.
        """
        attempt, connected_at = 0, time.monotonic()
        while True:
            if self._connected:
                await self._lost.wait()
                self._fail("lost the connection to tor; reconnecting")
                log.warning("lost the connection to tor; reconnecting")
                attempt = 0 if time.monotonic() - connected_at >= self.stable_after else attempt + 1
            await self.tor.stop()
            delay = self.state.retry_in = self.backoff[min(attempt, len(self.backoff) - 1)]
            await asyncio.sleep(delay)
            self.state.reconnects += 1
            try:
                await self._connect()
                connected_at = time.monotonic()
            except TorError as exc:
                attempt += 1
                self._fail(f"{exc.message} (retrying in {self.backoff[min(attempt, len(self.backoff) - 1)]:.0f}s)")
                log.error("tor: %s", exc.message)
            except Exception:  # a bug must not end the supervisor: log it, back off, retry
                attempt += 1
                self._fail("unexpected problem talking to tor (see the node's log); retrying")
                log.exception("unexpected error while connecting to tor")

    async def _connect(self) -> None:
        self._lost.clear()
        await self.tor.start(on_lost=self._lost.set, on_descriptor=self._on_descriptor, on_bootstrap=self._on_bootstrap)
        self._connected = True
        self.state.state, self.state.version = TorStatus(TorPhase.CONNECTED), self.tor.version
        self.state.socks = ":".join(map(str, self.tor.socks)) if self.tor.socks else ""
        log.info("connected to tor %s (%s)", self.tor.version, self.state.mode)
        await asyncio.gather(*(self._sync(o) for o in list(self.wanted)))

    # -- internals ---------------------------------------------------------
    def _fail(self, reason: str) -> None:
        self._connected = False
        self._published.clear()  # tor drops a connection's onions with it
        self._uploading.clear()
        self.state.state = TorStatus(TorPhase.ERROR, reason)
        for onion in self.wanted:
            self.status[onion] = StoreStatus.error(reason)

    async def _sync(self, onion: str) -> None:
        """Make tor's copy of ``onion`` match ``wanted`` (no-op when it already does)."""
        async with self._locks.setdefault(onion, asyncio.Lock()):
            spec = self.wanted.get(onion)
            if not self._connected or self._published.get(onion) == spec:
                return
            if spec is not None and spec.pow and not self.tor.supports_pow:
                self.status[onion] = StoreStatus.error(
                    f"proof-of-work needs tor 0.4.9.2 or newer (this is {self.tor.version}): "
                    "turn the store's proof-of-work option off or upgrade tor"
                    + ("; still published without the new options" if onion in self._published else "")
                )
                return
            try:
                if onion in self._published:
                    if spec is not None:  # a replacement follows: its descriptor must be newer
                        await self._next_revision_second(onion)
                    await self.tor.remove_onion(onion)
                    del self._published[onion]
                if spec is None:
                    self.status.pop(onion, None)
                    return
                self.status[onion] = STARTING
                self._uploading.discard(onion)
                name = await self.tor.add_onion(spec)
            except TorError as exc:
                self.status[onion] = StoreStatus.error(exc.message)
                log.error("store %s: %s", onion, exc.message)
                return
            self._published[name] = spec
            if name != onion:
                await self._refuse(onion, name)

    async def _next_revision_second(self, onion: str) -> None:
        """Replace an onion only in a later second than its last descriptor upload.

        tor's descriptor revision counter encodes whole seconds (since the start of
        the shared-random period), and HSDirs refuse a descriptor whose revision is
        not above the one they hold: a replacement uploaded in the same second as
        the previous descriptor would be refused by every HSDir, leaving buyers the
        old one (dead introduction points) until tor happens to upload again.
        """
        last = self._upload_at.get(onion)
        if last is not None and (delay := math.floor(last) + 1 - time.time()) > 0:
            await asyncio.sleep(delay)

    async def _refuse(self, onion: str, name: str) -> None:
        try:
            await self.tor.remove_onion(name)
            del self._published[name]
        except TorError as exc:
            log.error("could not withdraw %s.onion: %s", name, exc.message)
        self.status[onion] = StoreStatus.error(f"tor computed {name}.onion from this store's key; not published")
        log.error("store %s: %s", onion, self.status[onion])

    def _on_descriptor(self, action: str, name: str, reason: str) -> None:
        if name not in self.wanted or name not in self._published:
            return
        if action == "UPLOAD":
            self._uploading.add(name)
            self._upload_at[name] = time.time()
        elif action == "UPLOADED" and name in self._uploading:
            if self.status.get(name) != PUBLISHED:
                log.info("store %s.onion published", name)
            self.status[name] = PUBLISHED
        elif action == "FAILED" and self.status.get(name) != PUBLISHED:
            log.debug("store %s: descriptor upload failed (%s); tor retries", name, reason)

    def _on_bootstrap(self, percent: int, summary: str) -> None:
        if percent != self.state.bootstrap:
            log.info("tor bootstrapped %d%%: %s", percent, summary)
        self.state.bootstrap, self.state.summary = percent, summary
