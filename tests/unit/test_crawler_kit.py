"""Shared helpers for the crawler tests: real signed catalogs and real loopback store listeners."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from node.core.crypto import StoreKey
from node.market import catalog, listings, profile

NOW = 1_800_000_000
WORDS = "wool socks linen shirt copper kettle walnut bowl honey jar cedar box brass lamp".split()


def listing_input(i: int, *, words: int = 30) -> dict[str, object]:
    text = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(words))
    return {
        "title": f"{WORDS[i % len(WORDS)]} {WORDS[(i + 3) % len(WORDS)]} number {i}",
        "description": f"{text} item {i}",
        "kind": "physical",
        "price_sat": 1000 + i,
        "category": ["Home", "Clothes", "Food"][i % 3],
        "tags": [WORDS[i % len(WORDS)], "handmade"],
        "images": [hashlib.sha256(f"img{i}".encode()).hexdigest()],
        "shipping": [{"name": "Post", "regions": ["DE", "FR"] if i % 2 else ["WORLDWIDE"], "price_sat": 500}],
    }


def snapshot(key: StoreKey, n: int = 3, *, seq: int = NOW, now: int = NOW, ttl: int = 86400, name: str = "Shop"):
    items = listings.validate_new([listing_input(i) for i in range(n)], max_images=8, now=now)
    prof = profile.validate({"name": name, "description": "Good things"})
    return catalog.build(key, prof, items, seq=seq, now=now, ttl=ttl)


class StoreServer:
    """Real aiohttp routes serving stores' catalogs, thumbnails and mirrors (one app for many onions).

    Paths are prefixed with the onion (``/<onion>/...``) so one listener serves many stores;
    ``resolve`` maps an onion to ``http://127.0.0.1:<port>/<onion>``.
    """

    def __init__(self) -> None:
        self.catalogs: dict[str, bytes] = {}
        self.mirrors: dict[tuple[str, str], bytes] = {}  # (peer, store) -> raw
        self.thumbs: dict[tuple[str, str], bytes] = {}  # (onion, image id) -> jpeg
        self.blocklists: dict[str, bytes] = {}
        self.mirror_thumbs: dict[tuple[str, str, str], bytes] = {}  # (peer, store, image id) -> jpeg
        self.hits: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate: Callable[[], Awaitable[object]] | None = None
        self.base = ""
        self.offline: set[str] = set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{onion}/.well-known/pasar/catalog.json", self._catalog)
        app.router.add_get("/{onion}/.well-known/pasar/mirror/{store}/catalog.json", self._mirror)
        app.router.add_get("/{onion}/images/{name}", self._thumb)
        app.router.add_get("/{onion}/.well-known/pasar/mirror/{store}/images/{name}", self._mirror_thumb)
        app.router.add_get("/{onion}/.well-known/pasar/blocklist.json", self._blocklist)
        return app

    def resolve(self, onion: str) -> str | None:
        known = {o for o, *_ in (*self.mirrors, *self.thumbs, *self.mirror_thumbs)}
        known |= {*self.catalogs, *self.blocklists}
        return f"{self.base}/{onion}" if onion in known and onion not in self.offline else None

    async def _catalog(self, request: web.Request) -> web.StreamResponse:
        onion = request.match_info["onion"]
        self.hits.append(onion)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate()
            raw = self.catalogs.get(onion)
            if raw is None:
                raise web.HTTPNotFound()
            etag = '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers={"ETag": etag})
            return web.Response(body=raw, content_type="application/json", headers={"ETag": etag})
        finally:
            self.in_flight -= 1

    async def _mirror(self, request: web.Request) -> web.StreamResponse:
        raw = self.mirrors.get((request.match_info["onion"], request.match_info["store"]))
        if raw is None:
            raise web.HTTPNotFound()
        return web.Response(body=raw, content_type="application/json")

    async def _thumb(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits.append(f"thumb:{name}")
        data = self.thumbs.get((request.match_info["onion"], name.removesuffix(".thumb.jpg")))
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="image/jpeg")

    async def _mirror_thumb(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        self.hits.append(f"mirror-thumb:{m['onion']}")
        data = self.mirror_thumbs.get((m["onion"], m["store"], m["name"].removesuffix(".thumb.jpg")))
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="image/jpeg")

    async def _blocklist(self, request: web.Request) -> web.StreamResponse:
        raw = self.blocklists.get(request.match_info["onion"])
        if raw is None:
            raise web.HTTPNotFound()
        return web.Response(body=raw, content_type="application/json")
