"""A small LRU of rendered storefront pages, keyed by catalog version.

Pages are rendered once per (store, seq, path) and then served from memory;
a change bumps ``seq``, so stale entries are never hit and age out.
"""

from __future__ import annotations

from collections import OrderedDict


class PageCache:
    def __init__(self, max_entries: int = 512) -> None:
        self._max = max_entries
        self._pages: OrderedDict[tuple[str, int, str], bytes] = OrderedDict()

    def get(self, store: str, seq: int, path: str) -> bytes | None:
        key = (store, seq, path)
        page = self._pages.get(key)
        if page is not None:
            self._pages.move_to_end(key)
        return page

    def put(self, store: str, seq: int, path: str, body: bytes) -> None:
        self._pages[(store, seq, path)] = body
        self._pages.move_to_end((store, seq, path))
        while len(self._pages) > self._max:
            self._pages.popitem(last=False)
