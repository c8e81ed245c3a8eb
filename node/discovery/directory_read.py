"""The directory's read functions: search, newest, stores, categories (run on a read connection).

The full-text parts differ between SQLite and PostgreSQL (``directory_dialect.py``); what
follows is how SQLite does it; PostgreSQL does the same with ``ts_rank`` over the GIN index.

Search ranks inside FTS5: ``listings_fts`` has its bm25 weights as its
``rank`` (title 10, description 2, category 4, tags 5), so
``ORDER BY listings_fts.rank LIMIT n`` lets FTS5 sort the matches itself
and compute snippet() only for the rows returned, and the joins to
``listings`` and ``stores`` only run for rows that are read. The total is
counted up to :data:`COUNT_CAP` + 1 matches (a total above the cap means
"more than COUNT_CAP"): counting every match of a common word costs more
than the page itself, and nobody pages past 10,000 results.

A query with more matches than the cap is too broad to rank: its matches
are listed most recently indexed first (FTS5 walks them in rowid order and
stops after the page) with score 0. bm25 would cost seconds there, whatever
the LIMIT: FTS5 scores every match, and for each term it first walks the
term's whole doclist to count the documents holding it (the IDF), a
million entries for a word most listings contain. Whether a query is
broad is decided on its matches before the filters (bm25 runs before the
filters apply); with filters, the total of a broad query counts the
filtered matches among its :data:`SCAN_CAP` most recently indexed ones.
"""

from __future__ import annotations

from typing import Any

from ..core import ports
from ..core.models import Sats
from . import review_index
from .directory_dialect import ELLIPSIS, HEADLINE_OPTIONS, RESULT_COLUMNS, SNIPPET_TOKENS, SQLITE, Dialect
from .directory_dialect import MARK_CLOSE as MARK_CLOSE  # the snippet marks, as before the dialects
from .directory_dialect import MARK_OPEN as MARK_OPEN
from .models import DirectoryStore, Rating, SearchPage, SearchQuery, SearchResult

COUNT_CAP = 10_000
SCAN_CAP = 20_000  # matches a filtered count of a broad query looks at, most recently indexed first


def _filters(query: SearchQuery) -> tuple[str, list[object]]:
    """SQL conditions on ``l`` (listings) for the query's filters (already validated)."""
    sql: list[str] = []
    params: list[object] = []
    if query.category:
        sql.append("l.category = ?")
        params.append(query.category)
    if query.min_price_sat is not None:
        sql.append("l.price_sat >= ?")
        params.append(query.min_price_sat)
    if query.max_price_sat is not None:
        sql.append("l.price_sat <= ?")
        params.append(query.max_price_sat)
    if query.ships_to:
        sql.append("(instr(l.ships_to, ?) > 0 OR instr(l.ships_to, ?) > 0)")
        params.extend((f"\n{query.ships_to}\n", "\nWORLDWIDE\n"))
    if query.store:
        sql.append("l.store = ?")
        params.append(query.store)
    return "".join(f" AND {s}" for s in sql), params


def _result(row: Any, *, snippet: str, score: float, reachable_since: int) -> SearchResult:
    last_seen = row["last_seen"]
    return SearchResult(
        store=row["store"],
        listing=row["id"],
        title=row["title"],
        price_sat=Sats(int(row["price_sat"])),
        snippet=snippet,
        score=score,
        source=row["source"] or "direct",
        as_of=int(row["as_of"] or 0),
        category=row["category"],
        store_name=row["store_name"],
        thumb=row["thumb"],
        reachable=int(row["failures"]) == 0 and last_seen is not None and int(last_seen) >= reachable_since,
        created_at=int(row["created_at"]),
    )


def _plain_snippet(description: str) -> str:
    words = description.split()
    text = " ".join(words[:SNIPPET_TOKENS])
    return text + ELLIPSIS if len(words) > SNIPPET_TOKENS else text


def search(
    conn: ports.SqlConnection,
    query: SearchQuery,
    match: str | None,
    *,
    reachable_since: int,
    dialect: Dialect = SQLITE,
) -> SearchPage:
    """One page of results and the (capped) total; ``match`` (``dialect.match``) None = newest first, filters only.

    The SQL text is built from constants only (``_filters`` adds fixed conditions); every value is bound.
    """
    where, params = _filters(query)
    if match is None:
        return _newest_page(conn, query, where, params, reachable_since=reachable_since)
    total: int | None = None
    rows: list[Any] | None = None
    if dialect.counts_in_one_pass:
        matches, total, rows = _one_pass(conn, query, match, where, params, dialect)
    else:
        matches = _count(conn, f"{dialect.matches_sql} LIMIT ?", (match,), COUNT_CAP + 1)
        total = None if where else matches
    broad = matches > COUNT_CAP
    if total is None:
        # A broad query with filters counts among its SCAN_CAP most recently indexed matches only.
        total = _count(
            conn,
            f"SELECT 1 FROM ({dialect.matches_sql} ORDER BY rowid DESC LIMIT ?) m "  # noqa: S608
            f"JOIN listings l ON l.rowid = m.rowid WHERE 1 = 1{where} LIMIT ?",
            (match, SCAN_CAP, *params),
            COUNT_CAP + 1,
        )
    if rows is None:
        rows = conn.execute(
            dialect.page_sql(where, broad=broad),
            dialect.page_params(match, params, broad=broad, limit=query.limit, offset=query.offset),
        ).fetchall()
    results = [
        _result(
            r,
            snippet=dialect.snippet(r["snip"], r["description"]) or _plain_snippet(r["title"]),
            score=-float(r["rank"]),
            reachable_since=reachable_since,
        )
        for r in rows
    ]
    return SearchPage(total=total, results=results)


def _one_pass(
    conn: ports.SqlConnection, query: SearchQuery, match: str, where: str, params: list[object], dialect: Dialect
) -> tuple[int, int | None, list[Any] | None]:
    """The matches (capped), the filtered total and the ranked page from one statement
    (``Dialect.counted_page_sql``); None where ``search`` still has to ask (a broad query's page, a
    broad filtered total, the filtered total behind an empty page)."""
    rows = conn.execute(
        dialect.counted_page_sql(where),
        (match, COUNT_CAP + 1, match, COUNT_CAP, *params, query.limit, query.offset, match, HEADLINE_OPTIONS),
    ).fetchall()
    matches = int(rows[0]["matches"])
    if matches > COUNT_CAP:
        return matches, None if where else matches, None
    hits = [r for r in rows if r["hit"] is not None]
    if hits:
        return matches, int(hits[0]["filtered"]), hits
    if not where:
        return matches, matches, hits
    return matches, None if query.offset else 0, hits


def _count(conn: ports.SqlConnection, inner: str, params: tuple[object, ...], cap: int) -> int:
    return int(conn.execute(f"SELECT count(*) FROM ({inner}) AS counted", (*params, cap)).fetchone()[0])  # noqa: S608


def _newest_page(
    conn: ports.SqlConnection, query: SearchQuery, where: str, params: list[object], *, reachable_since: int
) -> SearchPage:
    rows = conn.execute(
        f"SELECT {RESULT_COLUMNS} FROM listings l JOIN stores s ON s.onion = l.store "  # noqa: S608
        f"WHERE 1 = 1{where} ORDER BY l.listed_at DESC, l.rowid DESC LIMIT ? OFFSET ?",
        (*params, query.limit, query.offset),
    ).fetchall()
    results = [
        _result(r, snippet=_plain_snippet(r["description"]), score=0.0, reachable_since=reachable_since) for r in rows
    ]
    total = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM listings l WHERE 1 = 1{where} LIMIT ?) AS counted",  # noqa: S608
        (*params, COUNT_CAP + 1),
    ).fetchone()[0]
    return SearchPage(total=int(total), results=results)


# -- stores ----------------------------------------------------------------------------
_SELECT_STORE = (
    "SELECT onion, name, description, last_seen, last_attempt, failures, seq, as_of, source, listings FROM stores"
)


def _store(conn: ports.SqlConnection, row: Any, *, reachable_since: int, now: int, grace: int) -> DirectoryStore:
    last_seen, onion = row["last_seen"], row["onion"]
    return DirectoryStore(
        store=row["onion"],
        name=row["name"],
        description=row["description"],
        reachable=int(row["failures"]) == 0 and last_seen is not None and int(last_seen) >= reachable_since,
        last_seen=last_seen,
        last_attempt=row["last_attempt"],
        failures=int(row["failures"]),
        catalog_seq=row["seq"],
        as_of=row["as_of"],
        source=row["source"],
        listings=int(row["listings"]),
        blocked=False,
        rating=review_index.rating(conn, onion, now=now),
        omitted=review_index.omitted(conn, onion, as_of=row["as_of"], grace=grace, now=now),
    )


def blocked_store(onion: str) -> DirectoryStore:
    """What the directory says about a blocked store: nothing but that it is blocked."""
    return DirectoryStore(
        store=onion,
        name="",
        description="",
        reachable=False,
        last_seen=None,
        last_attempt=None,
        failures=0,
        catalog_seq=None,
        as_of=None,
        source=None,
        listings=0,
        blocked=True,
        rating=Rating(count=0, mean=None, stars=[0] * 5),
        omitted=0,
    )


def store(
    conn: ports.SqlConnection, onion: str, *, reachable_since: int, now: int, grace: int
) -> DirectoryStore | None:
    """One store with its reviews (the newest ``review_index.MAX_SHOWN``)."""
    row = conn.execute(_SELECT_STORE + " WHERE onion = ?", (onion,)).fetchone()
    if row is None:
        return None
    found = _store(conn, row, reachable_since=reachable_since, now=now, grace=grace)
    found["reviews"] = review_index.shown(conn, onion, now=now)
    return found


def stores(
    conn: ports.SqlConnection,
    *,
    limit: int,
    offset: int,
    reachable_since: int,
    now: int,
    grace: int,
    dialect: Dialect = SQLITE,
) -> list[DirectoryStore]:
    rows = conn.execute(
        f"{_SELECT_STORE} ORDER BY {dialect.store_order} LIMIT ? OFFSET ?",
        (limit, offset),
    ).fetchall()
    return [_store(conn, r, reachable_since=reachable_since, now=now, grace=grace) for r in rows]


def categories(conn: ports.SqlConnection, *, limit: int = 200) -> list[tuple[str, int]]:
    rows = conn.execute(
        "SELECT category, count(*) AS n FROM listings WHERE category != '' GROUP BY category "
        "ORDER BY n DESC, category LIMIT ?",
        (limit,),
    ).fetchall()
    return [(str(r[0]), int(r[1])) for r in rows]


def counts(conn: ports.SqlConnection) -> tuple[int, int]:
    row = conn.execute("SELECT count(*), coalesce(sum(listings), 0) FROM stores").fetchone()
    return int(row[0]), int(row[1])


def mirror(conn: ports.SqlConnection, store: str, *, now: int) -> bytes | None:
    row = conn.execute(
        "SELECT m.raw FROM mirrors m JOIN stores s ON s.onion = m.store WHERE m.store = ? AND s.expires_at > ?",
        (store, now),
    ).fetchone()
    return None if row is None else bytes(row[0])


def has_listing(conn: ports.SqlConnection, store: str, listing: str) -> bool:
    row = conn.execute("SELECT 1 FROM listings WHERE store = ? AND id = ? LIMIT 1", (store, listing)).fetchone()
    return row is not None


def lists_image(conn: ports.SqlConnection, store: str, image_id: str) -> bool:
    """Whether one of the store's indexed listings shows this image (its thumbnail may be fetched)."""
    row = conn.execute("SELECT 1 FROM listings WHERE store = ? AND thumb = ? LIMIT 1", (store, image_id)).fetchone()
    return row is not None


def thumb(conn: ports.SqlConnection, store: str, image_id: str) -> bytes | None:
    row = conn.execute("SELECT data FROM thumbs WHERE store = ? AND image_id = ?", (store, image_id)).fetchone()
    return None if row is None else bytes(row[0])
