"""In-store search: the words of a query, the text a listing is found by, and the pure-Python index.

The node passes a full-text index factory into ``Market`` (SQLite FTS5,
``node/adapters/textindex.py``): each snapshot builds its index once, and a
search looks words up instead of scanning every listing. Without one (unit
tests, the CLI) :func:`scan_index` is used: the scan the storefront always
did, substring matching on casefolded text.

Semantics shared by both: all words must match, results keep the snapshot's
order (newest first), a category narrows them. They differ in what "match"
means: the scan matches any substring ("itcoin" finds "Bitcoin"); FTS5 matches
tokens by prefix ("bitc" finds "Bitcoin", "itcoin" finds nothing) and ignores
diacritics ("cafe" finds "Café", the scan does not).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ..core.models import PublicListing
from ..core.ports import TextDoc, TextHits, TextIndex

MAX_WORDS = 10


def words(query: str) -> list[str]:
    """The words a query looks for: casefolded, split on whitespace, at most ``MAX_WORDS``."""
    return query.casefold().split()[:MAX_WORDS]


def doc(view: PublicListing) -> TextDoc:
    """What a listing is found by: title, category, tags and description."""
    parts = [view["title"], view["category"], " ".join(view["tags"]), view["description"]]
    return TextDoc(" ".join(parts).casefold(), view["category"])


class ScanIndex:
    """No index: every search looks at every listing (substring match on casefolded text)."""

    def __init__(self, docs: Sequence[TextDoc]) -> None:
        self._docs = list(docs)

    def search(self, words: Sequence[str], *, category: str | None, offset: int, limit: int) -> TextHits:
        found = [
            n
            for n, d in enumerate(self._docs)
            if (category is None or d.category == category) and all(w in d.text for w in words)
        ]
        return TextHits(found[max(0, offset) : max(0, offset) + max(0, limit)], len(found))

    async def find(self, words: Sequence[str], *, category: str | None, offset: int, limit: int) -> TextHits:
        return await asyncio.to_thread(self.search, words, category=category, offset=offset, limit=limit)


def scan_index(docs: Sequence[TextDoc]) -> TextIndex:
    """The default index factory (no full-text engine)."""
    return ScanIndex(docs)
