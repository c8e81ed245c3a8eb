"""User search text -> a safe FTS5 MATCH expression, or parsed words for PostgreSQL (pure).

Nothing the user types becomes FTS5 syntax. The text is cut to
:data:`MAX_CHARS` characters and split on white space into words; each word
keeps only its token characters (letters, digits, marks, private use: what
the ``unicode61`` tokenizer indexes) and becomes one double-quoted phrase, so
``AND``, ``OR``, ``NOT``, ``NEAR(``, ``^``, ``:``, ``-``, ``+``, column
filters, parentheses and quotes are plain text (or separators), never
operators. A word made of several tokens (``t-shirt``, ``e-mail``) is one
phrase: its tokens must appear in that order, side by side. Words with no
token character are dropped; the first :data:`MAX_WORDS` are kept. All
words must match (implicit AND).

Prefixes: a word typed with a trailing ``*`` whose last token has at least
2 characters matches as a prefix (``cam*`` finds "camera"); a shorter one is
an exact word. The last word of a query without any ``*`` is also a prefix
when its last token has at least 3 characters, so a half-typed or plural
word still finds something ("shoe" finds "shoes", "bicy" finds "bicycle").
Quotes are not syntax either: ``"red shoe`` is the two words red, shoe*. A query with no token character at all gives
``None``: no full-text condition (the directory lists the newest listings
that pass the filters).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

MAX_CHARS = 256
MAX_WORDS = 12
MAX_TOKEN_CHARS = 64
MIN_PREFIX = 2  # a typed ``*`` makes a prefix from this many characters
MIN_AUTO_PREFIX = 3  # the last word becomes a prefix from this many characters


def _is_token_char(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category[0] in "LN" or category in ("Co", "Mn")


def tokens(word: str) -> list[str]:
    """The runs of token characters in ``word`` (each cut to :data:`MAX_TOKEN_CHARS`)."""
    found: list[str] = []
    current: list[str] = []
    for ch in word:
        if _is_token_char(ch):
            current.append(ch)
            continue
        if current:
            found.append("".join(current)[:MAX_TOKEN_CHARS])
            current = []
    if current:
        found.append("".join(current)[:MAX_TOKEN_CHARS])
    return found


@dataclass(frozen=True)
class Word:
    """One user word: its tokens (side by side, in order) and whether the last one matches as a prefix."""

    tokens: tuple[str, ...]
    prefix: bool


def parse(text: str) -> list[Word]:
    """The words of ``text`` as the search uses them (empty: no word, list the newest)."""
    words: list[Word] = []
    starred = False
    for raw in text[:MAX_CHARS].split():
        parts = tokens(raw)
        if not parts:
            continue
        star = raw.endswith("*")
        starred = starred or star
        words.append(Word(tuple(parts), star and len(parts[-1]) >= MIN_PREFIX))
        if len(words) == MAX_WORDS:
            break
    if words and not starred:
        last = words[-1]
        words[-1] = Word(last.tokens, len(last.tokens[-1]) >= MIN_AUTO_PREFIX)
    return words


def _phrase(word: Word) -> str:
    text = " ".join(word.tokens).replace('"', '""')  # no quote survives tokens(); doubled anyway
    return f'"{text}"*' if word.prefix else f'"{text}"'


def fts5_expression(words: list[Word]) -> str:
    """The FTS5 MATCH text of parsed ``words`` (each a quoted phrase, implicit AND)."""
    return " ".join(_phrase(w) for w in words)


def match_expression(text: str) -> str | None:
    """A MATCH expression for ``text`` (every word quoted, implicit AND), or None if it has no word."""
    words = parse(text)
    return fts5_expression(words) if words else None


def terms(text: str) -> list[str]:
    """The lower-case tokens of ``text`` as the query uses them (for highlighting elsewhere)."""
    found: list[str] = []
    for raw in text[:MAX_CHARS].split()[: MAX_WORDS * 4]:
        found.extend(t.casefold() for t in tokens(raw))
    return found[: MAX_WORDS * 4]
