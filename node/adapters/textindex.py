"""The in-store search index: SQLite FTS5 in memory, one per catalog snapshot.

A snapshot's listings are indexed once (when the snapshot is built, off the
event loop) into a contentless FTS5 table whose rowid is the listing's
position in the snapshot (newest first), so matches come out in page order
and no listing text is copied. Searches run on one thread of their own
(:class:`_SearchThread`), one at a time per index.

Queries: every user word must match a token by prefix ("bitc" finds
"Bitcoin"). A word of ASCII letters and digits (almost every query) is looked
up in the index's sorted vocabulary first: it becomes the exact terms it is a
prefix of (``"bitcoin"``, or ``("guide" OR "guides")``), which FTS5 answers
several times faster than a prefix query, and a word that is a prefix of no
term ends the search at once with no match. Any other word becomes one quoted
FTS5 phrase with a prefix star (``"foo-bar"*`` finds the tokens foo, bar* next
to each other; ``"café"*`` finds "Cafe"). Quoting makes any text literal:
``"``, ``*``, ``NEAR(``, ``-``, ``AND``/``OR``/``NOT`` are words, never syntax.
A word with no letter or digit (``-``, ``&``) can't match a token and is left
out; a query left with no words matches nothing. The category filter is a
token of its own in the ``cat`` column; user words only search ``body``.
"""

from __future__ import annotations

import asyncio
import bisect
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence

from ..core.errors import StorageError
from ..core.ports import TextDoc, TextHits

# unicode61 folds case and (remove_diacritics 2) accents: "cafe" finds "Café".
_SCHEMA = (
    "CREATE VIRTUAL TABLE docs USING fts5(body, cat, content='', detail=full, tokenize='unicode61 remove_diacritics 2')"
)
_VOCAB = "CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, docs, col)"
# A page, then (only if the page is full or past the end) the total.
_PAGE = "SELECT rowid FROM docs WHERE docs MATCH ? ORDER BY rowid LIMIT ? OFFSET ?"
_COUNT = "SELECT count(*) FROM docs WHERE docs MATCH ?"
IDLE_SECONDS = 2.0  # the search thread ends after this long without work
MAX_EXPANSION = 16  # a prefix of more terms than this stays an FTS5 prefix query


_Job = Callable[[], TextHits]


def _quoted(text: str) -> str:
    """FTS5 string literal (its parser stops at NUL: that becomes a separator, as it is to the tokenizer)."""
    return '"' + text.replace('"', '""').replace("\x00", " ") + '"'


def _phrase(word: str) -> str | None:
    """One user word as a literal FTS5 prefix phrase; None if it has nothing a token could match."""
    if not any(ch.isalnum() for ch in word):
        return None
    return _quoted(word) + "*"


def match_expression(words: Sequence[str], category_token: str | None = None) -> str | None:
    """The FTS5 MATCH text for ``words`` (all must match, each by prefix); None when nothing can match."""
    phrases = [p for w in words if (p := _phrase(w)) is not None]
    if not phrases:
        return None
    expr = "body : (" + " AND ".join(phrases) + ")"
    return expr if category_token is None else f"{expr} AND cat : {category_token}"


class _SearchThread:
    """One thread that runs index searches for event loops, started on demand, gone when idle.

    Cheaper per search than ``asyncio.to_thread`` (no executor, futures or
    context copy: a queue in, ``call_soon_threadsafe`` out), which matters when a
    search itself takes tens of microseconds. Searches of every store share it.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[TextHits], _Job]] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._running = False

    def submit(self, job: _Job) -> asyncio.Future[TextHits]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[TextHits] = loop.create_future()
        self._jobs.put((loop, future, job))
        with self._lock:  # the job is queued first: a thread that is just leaving sees it, or we start one
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="pasar-search", daemon=True).start()
        return future

    def _run(self) -> None:
        while True:
            try:
                loop, future, job = self._jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():
                        self._running = False
                        return
                continue
            try:
                outcome: TextHits | Exception = job()
            except Exception as exc:  # handed to the awaiting request, which reports it
                outcome = exc
            try:
                loop.call_soon_threadsafe(_settle, future, outcome)
            except RuntimeError:  # that loop is closed: nobody waits for this answer any more
                continue


def _settle(future: asyncio.Future[TextHits], outcome: TextHits | Exception) -> None:
    if future.cancelled():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


_THREAD = _SearchThread()


class Fts5Index:
    """A built index; ``search`` is thread-safe and blocks (run it off the event loop)."""

    def __init__(self, docs: Sequence[TextDoc]) -> None:
        self._categories: dict[str, str] = {}
        for d in docs:
            self._categories.setdefault(d.category, f"k{len(self._categories)}")
        self._lock = threading.Lock()  # one connection, one search at a time
        try:
            self._conn = self._build(docs)
            vocab = self._conn.execute("SELECT term FROM temp.vocab WHERE col = 'body'")
            self._terms = sorted(str(r[0]) for r in vocab)
            self._conn.execute("DROP TABLE temp.vocab")
        except sqlite3.Error as exc:
            raise StorageError(f"could not build the store's search index ({exc}): is SQLite built with FTS5?") from exc

    def _build(self, docs: Sequence[TextDoc]) -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        conn.execute(_SCHEMA)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO docs(rowid, body, cat) VALUES (?, ?, ?)",
            ((n, d.text, self._categories[d.category]) for n, d in enumerate(docs)),
        )
        conn.execute("COMMIT")
        conn.execute("INSERT INTO docs(docs) VALUES ('optimize')")  # one b-tree: fewer segments to merge per query
        conn.execute(_VOCAB)
        return conn

    def _expanded(self, word: str) -> str | None:
        """The exact terms ``word`` is a prefix of, as FTS5 text ("" if none); None if it must stay a prefix query."""
        if not (word.isascii() and word.isalnum()):
            return None  # folding other text the way the tokenizer does is FTS5's job
        terms = self._terms
        start = end = bisect.bisect_left(terms, word)
        while end < len(terms) and terms[end].startswith(word):
            end += 1
            if end - start > MAX_EXPANSION:
                return None
        found = [_quoted(t) for t in terms[start:end]]
        return found[0] if len(found) == 1 else "(" + " OR ".join(found) + ")" if found else ""

    def expression(self, words: Sequence[str], category: str | None) -> str | None:
        """The MATCH text for ``words`` in ``category``; None when nothing can match."""
        token = None if category is None else self._categories.get(category)
        if category is not None and token is None:
            return None
        phrases = []
        for word in words:
            exact = self._expanded(word)
            if exact == "":
                return None  # a prefix of no term: no listing has every word
            phrase = exact if exact is not None else _phrase(word)
            if phrase is not None:
                phrases.append(phrase)
        if not phrases:
            return None
        expr = "body : (" + " AND ".join(phrases) + ")"
        return expr if token is None else f"{expr} AND cat : {token}"

    def search(self, words: Sequence[str], *, category: str | None, offset: int, limit: int) -> TextHits:
        expr = self.expression(words, category)
        if expr is None:
            return TextHits([], 0)
        offset, limit = max(0, offset), max(0, limit)
        try:
            with self._lock:
                rows = self._conn.execute(_PAGE, (expr, limit, offset)).fetchall()
                if rows and len(rows) < limit:  # the last page: the total is known without counting
                    total = offset + len(rows)
                elif rows or offset or not limit:
                    total = int(self._conn.execute(_COUNT, (expr,)).fetchone()[0])
                else:
                    total = 0
        except sqlite3.Error as exc:  # quoting makes this a bug, not bad input: say what failed
            raise StorageError(f"the store's search index failed on {expr!r}: {exc}") from exc
        return TextHits([int(r[0]) for r in rows], total)

    async def find(self, words: Sequence[str], *, category: str | None, offset: int, limit: int) -> TextHits:
        """``search`` on the search thread, off the event loop."""
        return await _THREAD.submit(lambda: self.search(words, category=category, offset=offset, limit=limit))


def fts5_index(docs: Sequence[TextDoc]) -> Fts5Index:
    """The ``ports.TextIndexFactory`` the node passes to ``Market``."""
    return Fts5Index(docs)
