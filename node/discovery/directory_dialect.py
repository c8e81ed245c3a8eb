"""What the directory's SQL says differently on SQLite (FTS5) and PostgreSQL (tsvector + GIN).

Everything else in ``directory*.py``, ``review_index.py`` and
``moderation.py`` is SQL both engines run as written. A :class:`Dialect`
holds the full-text parts: how the user's words (parsed once, by
``search.parse``) become the engine's match text, the query that lists the
matching rowids, and the page query that ranks and marks snippets; plus the
case-insensitive order of store names.

Both engines match the same way (every word, the words' tokens side by
side, prefixes where ``search.py`` says, accents and case folded) and rank
with the same column weights (title 10, tags 5, category 4, description 2):
SQLite with bm25, PostgreSQL with ``ts_rank`` (weights in
``node/adapters/directory_pg_schema.py``). The score values differ between
the engines; the order of clearly different matches does not.
Page SQL selects ``rank`` (lower = better: ``-score``) and ``snip``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..core import ports
from .search import Word, fts5_expression, parse

MARK_OPEN = "\ue000"
MARK_CLOSE = "\ue001"
ELLIPSIS = "…"
SNIPPET_TOKENS = 16

_LOCK_BLOCKS = 0x70617301  # advisory lock classes (the two-key space; the schema lock uses the one-key space)
_LOCK_STORE = 0x70617302

RESULT_COLUMNS = (
    "l.store, l.id, l.title, l.price_sat, l.category, l.thumb, l.created_at, l.description, "
    "s.name AS store_name, s.source, s.as_of, s.failures, s.last_seen"
)


@dataclass(frozen=True)
class Dialect:
    name: str

    def match(self, text: str) -> str | None:
        """The engine's match text for the user's ``text`` (None: no word, no full-text condition)."""
        words = parse(text)
        if not words:
            return None
        return fts5_expression(words) if self.name == "sqlite" else tsquery(words)

    @property
    def matches_sql(self) -> str:
        """SELECT the ``rowid`` of the listings matching ``?`` (the match text)."""
        if self.name == "sqlite":
            return "SELECT rowid FROM listings_fts WHERE listings_fts MATCH ?"
        return "SELECT rowid FROM listings WHERE fts @@ to_tsquery('pasar_text', ?)"

    def page_sql(self, where: str, *, broad: bool) -> str:
        """One page: ``RESULT_COLUMNS``, ``snip``, ``rank``; parameters: see :meth:`page_params`.

        The text is built from constants and ``where`` (``directory_read._filters``' fixed conditions); every
        value is bound.
        """
        if self.name == "sqlite":
            return (
                f"SELECT {RESULT_COLUMNS}, snippet(listings_fts, 1, ?, ?, ?, {SNIPPET_TOKENS}) AS snip, "  # noqa: S608
                f" {'0.0' if broad else 'listings_fts.rank'} AS rank "
                "FROM listings_fts JOIN listings l ON l.rowid = listings_fts.rowid JOIN stores s ON s.onion = l.store "
                f"WHERE listings_fts MATCH ?{where} "
                f"ORDER BY {'listings_fts.rowid DESC' if broad else 'listings_fts.rank'} LIMIT ? OFFSET ?"
            )
        rank = "0.0" if broad else "-ts_rank('{0.2, 0.4, 0.5, 1.0}', l.fts, to_tsquery('pasar_text', ?))"
        return (
            f"SELECT {RESULT_COLUMNS}, ts_headline('pasar_text', l.description, to_tsquery('pasar_text', ?), ?) "  # noqa: S608
            " AS snip, m.rank "
            f"FROM (SELECT l.rowid, {rank} AS rank FROM listings l "
            f" WHERE l.fts @@ to_tsquery('pasar_text', ?){where} "
            f" ORDER BY {'' if broad else 'rank, '}l.rowid DESC LIMIT ? OFFSET ?) m "
            "JOIN listings l ON l.rowid = m.rowid JOIN stores s ON s.onion = l.store ORDER BY m.rank, m.rowid DESC"
        )

    def page_params(self, match: str, filters: list[object], *, broad: bool, limit: int, offset: int) -> list[object]:
        if self.name == "sqlite":
            return [MARK_OPEN, MARK_CLOSE, ELLIPSIS, match, *filters, limit, offset]
        rank = [] if broad else [match]
        return [match, HEADLINE_OPTIONS, *rank, match, *filters, limit, offset]

    @property
    def counts_in_one_pass(self) -> bool:
        """Whether a query gets its counts and ranked page from :meth:`counted_page_sql` (PostgreSQL).

        FTS5 counts from its index alone; PostgreSQL has to visit the matching rows, so it visits
        them once: up to ``cap + 1`` matching rowids are collected and counted and, when there are
        at most ``cap``, the filtered ones are counted and ranked in the same statement. A broader
        query then gets its page (newest first, unranked) from :meth:`page_sql` with ``broad=True``,
        which stops after the page.
        """
        return self.name == "postgres"

    def counted_page_sql(self, where: str) -> str:
        """Rows ``matches, filtered, hit, RESULT_COLUMNS, snip, rank``: at least one, ``hit`` NULL when
        the page is empty or the query is broad (``matches`` > cap). Parameters: match, cap + 1, match,
        cap, the filters', limit, offset, match, HEADLINE_OPTIONS. ``where``: fixed conditions on ``l``."""
        q = "to_tsquery('pasar_text', ?)"
        return (
            f"WITH m AS MATERIALIZED (SELECT l.rowid FROM listings l WHERE l.fts @@ {q} LIMIT ?), "  # noqa: S608 (constants only)
            "n AS (SELECT count(*) AS matches FROM m), "
            f"p AS (SELECT l.rowid, -ts_rank('{{0.2, 0.4, 0.5, 1.0}}', l.fts, {q}) AS rank, "
            "  count(*) OVER () AS filtered "
            f" FROM m CROSS JOIN n JOIN listings l ON l.rowid = m.rowid WHERE n.matches <= ?{where} "
            " ORDER BY rank, l.rowid DESC LIMIT ? OFFSET ?) "
            f"SELECT n.matches, p.filtered, p.rowid AS hit, {RESULT_COLUMNS}, "
            f" ts_headline('pasar_text', l.description, {q}, ?) AS snip, p.rank "
            "FROM n LEFT JOIN (p JOIN listings l ON l.rowid = p.rowid JOIN stores s ON s.onion = l.store) ON true "
            "ORDER BY p.rank, p.rowid DESC"
        )

    def snippet(self, snip: str | None, description: str) -> str:
        """The page query's snippet as shown: marked words, an ellipsis where the text was cut."""
        if self.name == "sqlite" or not snip:
            return snip or ""
        return _with_ellipses(snip, description)

    def lock(self, conn: ports.SqlConnection, stores: Sequence[str] = (), *, blocks: bool = False) -> None:
        """Take a write's locks (held until its transaction ends): on PostgreSQL, where several frontends write.

        The blocks lock: shared by every write that checks the blocks before writing a store's rows,
        exclusive (``blocks=True``) for the writes that change or apply blocks, so a block waits for
        the index writes already under way and then purges what they wrote, and a later index sees the
        block. Each store's own lock (taken in a fixed order) makes "read the held seq, then replace
        the catalog" atomic per store. SQLite needs none: one writer thread per file.
        """
        if self.name == "sqlite":
            return
        fn = "pg_advisory_xact_lock" if blocks else "pg_advisory_xact_lock_shared"
        conn.execute(f"SELECT {fn}(?, 0)", (_LOCK_BLOCKS,))
        for store in sorted(set(stores)):
            conn.execute("SELECT pg_advisory_xact_lock(?, hashtext(?))", (_LOCK_STORE, store))

    @property
    def store_order(self) -> str:
        """ORDER BY of the stores list: names case-insensitively, then onion."""
        return "name COLLATE NOCASE, onion" if self.name == "sqlite" else "lower(name), onion"


SQLITE = Dialect("sqlite")
POSTGRES = Dialect("postgres")

HEADLINE_OPTIONS = (
    f"StartSel={MARK_OPEN}, StopSel={MARK_CLOSE}, MaxWords={SNIPPET_TOKENS}, MinWords={SNIPPET_TOKENS // 2}, "
    "ShortWord=0, HighlightAll=false, MaxFragments=0"
)


def _quote(token: str) -> str:
    return "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"


def tsquery(words: list[Word]) -> str:
    """``to_tsquery`` text: each word's tokens side by side (``<->``), the last one ``:*`` if a prefix; all ANDed."""
    parts = []
    for word in words:
        tokens = [_quote(t) for t in word.tokens]
        if word.prefix:
            tokens[-1] += ":*"
        parts.append(tokens[0] if len(tokens) == 1 else "(" + " <-> ".join(tokens) + ")")
    return " & ".join(parts)


def _with_ellipses(snip: str, description: str) -> str:
    plain = snip.replace(MARK_OPEN, "").replace(MARK_CLOSE, "")
    whole = " ".join(description.split())
    shown = " ".join(plain.split())
    if not shown or shown == whole:
        return snip
    start = whole.find(shown)
    head = ELLIPSIS if start > 0 else ""
    tail = ELLIPSIS if start < 0 or start + len(shown) < len(whole) else ""
    return head + snip.strip() + tail
