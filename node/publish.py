"""Keeps every store's onion service published, whatever happens to tor.

The publisher holds the wanted onions (one ``OnionSpec`` per store) and a
supervisor task: connect to tor (or launch it), publish everything, wait
until the connection drops, back off, repeat. Each store's status is one of
``starting`` (sent to tor), ``published`` (a descriptor reached an HSDir,
from HS_DESC events) or ``error: ...``. The tor adapter is passed in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import TorError

if TYPE_CHECKING:
    from .adapters.tor import OnionSpec, Tor

log = logging.getLogger(__name__)
BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


@dataclass
class TorState:
    """What the admin page and API show about tor itself."""

    mode: str  # "embedded" | "system"
    state: str = "starting"  # "starting" | "connected" | "error: ..."
    bootstrap: int = 0
    summary: str = ""
    version: str = ""
    socks: str = ""
    reconnects: int = 0

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class Publisher:
    tor: Tor
    status: dict[str, str]  # onion -> status; shared with the web layer
    backoff: Sequence[float] = BACKOFF
    state: TorState = field(init=False)
    wanted: dict[str, OnionSpec] = field(default_factory=dict)
    _published: set[str] = field(default_factory=set)
    _lost: asyncio.Event = field(default_factory=asyncio.Event)
    _connected: bool = False
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = TorState(mode="embedded" if self.tor.settings.embedded else "system")

    # -- what the app calls -------------------------------------------------
    async def publish(self, onion: str, spec: OnionSpec | None) -> None:
        """Publish ``onion`` as ``spec`` now (replacing what tor has), or withdraw it (None)."""
        if spec is None:
            self.wanted.pop(onion, None)
        else:
            self.wanted[onion] = spec
        if self._connected:
            await self._sync(onion)
        elif spec is not None:  # published once tor is back; until then say why not
            self.status[onion] = self.state.state if self.state.state.startswith("error") else "starting"

    async def start(self) -> None:
        """The first connection; a TorError here stops the node with its message."""
        await self._connect()

    async def run(self) -> None:
        """Reconnect whenever the connection drops, with backoff; runs until cancelled."""
        attempt = 0
        while True:
            if self._connected:
                await self._lost.wait()
                self._fail("error: lost the connection to tor; reconnecting")
                log.warning("lost the connection to tor; reconnecting")
            await self.tor.stop()
            await asyncio.sleep(self.backoff[min(attempt, len(self.backoff) - 1)])
            self.state.reconnects += 1
            try:
                await self._connect()
                attempt = 0
            except TorError as exc:
                attempt += 1
                self._fail(f"error: {exc.message}")
                log.error("tor: %s", exc.message)

    async def _connect(self) -> None:
        self._lost.clear()
        await self.tor.start(on_lost=self._lost.set, on_descriptor=self._on_descriptor, on_bootstrap=self._on_bootstrap)
        self._connected = True
        self.state.state, self.state.version = "connected", self.tor.version
        self.state.socks = ":".join(map(str, self.tor.socks)) if self.tor.socks else ""
        log.info("connected to tor %s (%s)", self.tor.version, self.state.mode)
        await asyncio.gather(*(self._sync(o) for o in list(self.wanted)))

    # -- internals ---------------------------------------------------------
    def _fail(self, message: str) -> None:
        self._connected = False
        self._published.clear()
        self.state.state = message
        for onion in self.wanted:
            self.status[onion] = message

    async def _sync(self, onion: str) -> None:
        async with self._locks.setdefault(onion, asyncio.Lock()):
            if not self._connected:
                return
            try:
                if onion in self._published:
                    self._published.discard(onion)
                    await self.tor.remove_onion(onion)
                spec = self.wanted.get(onion)
                if spec is None:
                    self.status.pop(onion, None)
                    return
                self.status[onion] = "starting"
                name = await self.tor.add_onion(spec)
            except TorError as exc:
                self.status[onion] = f"error: {exc.message}"
                log.error("store %s: %s", onion, exc.message)
                return
            self._published.add(name)
            if name != onion:
                await self.tor.remove_onion(name)
                self._published.discard(name)
                self.status[onion] = f"error: tor computed {name}.onion from this store's key; not published"
                log.error("store %s: %s", onion, self.status[onion])

    def _on_descriptor(self, action: str, name: str, reason: str) -> None:
        if name not in self.wanted or name not in self._published:
            return
        if action == "UPLOADED":
            if self.status.get(name) != "published":
                log.info("store %s.onion published", name)
            self.status[name] = "published"
        elif action == "FAILED" and self.status.get(name) != "published":
            log.debug("store %s: descriptor upload failed (%s); tor retries", name, reason)

    def _on_bootstrap(self, percent: int, summary: str) -> None:
        if percent != self.state.bootstrap:
            log.info("tor bootstrapped %d%%: %s", percent, summary)
        self.state.bootstrap, self.state.summary = percent, summary
