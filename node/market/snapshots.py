"""Each store's current catalog snapshot, cached until its store changes or it is due for a rebuild."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .catalog import Snapshot


class Snapshots:
    """Built at most once at a time per store; a build raced by a write is served once, never cached."""

    def __init__(self, now: Callable[[], int]) -> None:
        self._now = now
        self._snapshots: dict[str, Snapshot] = {}
        self._build_locks: dict[str, asyncio.Lock] = {}
        self._generation: dict[str, int] = {}

    def changed(self, onion: str) -> None:
        """The store changed: drop its snapshot, and any build under way will not be cached."""
        self._generation[onion] = self._generation.get(onion, 0) + 1
        self._snapshots.pop(onion, None)

    def forget(self, onion: str) -> None:
        """The store is gone."""
        for cache in (self._snapshots, self._generation, self._build_locks):
            cache.pop(onion, None)

    def _fresh(self, onion: str) -> Snapshot | None:
        snap = self._snapshots.get(onion)
        return snap if snap is not None and self._now() < snap.refresh_at else None

    async def get(self, onion: str, build: Callable[[], Awaitable[Snapshot]]) -> Snapshot:
        """The cached snapshot while fresh, else a new one from ``build``."""
        snap = self._fresh(onion)
        if snap is not None:
            return snap
        async with self._build_locks.setdefault(onion, asyncio.Lock()):
            snap = self._fresh(onion)
            if snap is not None:
                return snap
            generation = self._generation.get(onion, 0)
            snap = await build()
            if self._generation.get(onion, 0) == generation:
                self._snapshots[onion] = snap  # else a write raced us: rebuild next time
            return snap
