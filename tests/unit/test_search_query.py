"""User text -> FTS5 MATCH: FTS5 syntax typed by a user never becomes syntax (run on a real FTS5 table)."""

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.adapters.directory_schema import MIGRATIONS
from node.adapters.sqlite_schema import statements
from node.discovery.search import MAX_WORDS, match_expression, terms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("   ", None),
        ('" * - ( ) ^ :', None),
        ("socks", '"socks"*'),
        ("wool socks", '"wool" "socks"*'),
        ("wool so", '"wool" "so"'),  # a 2-letter last word is not a prefix unless starred
        ("so* wool", '"so"* "wool"'),  # a star anywhere: only starred words are prefixes
        ("s* wool", '"s" "wool"'),  # 1 letter: never a prefix
        ("t-shirt", '"t shirt"*'),  # one word of two tokens: a phrase
        ('"unbalanced', '"unbalanced"*'),
        ("NEAR(a b, 2)", '"NEAR a" "b" "2"'),
        ("a AND b OR NOT c", '"a" "AND" "b" "OR" "NOT" "c"'),
        ("title:socks", '"title socks"*'),
        ("{title}: x", '"title" "x"'),
        ("-wool +socks ^hat", '"wool" "socks" "hat"*'),
        ("crème", '"crème"*'),
        ("\x00\x01 socks\x7f", '"socks"*'),
    ],
)
def test_match_expression(text, expected):
    assert match_expression(text) == expected


def test_words_and_length_are_capped():
    expr = match_expression(" ".join(f"w{i}" for i in range(50)))
    assert expr is not None and expr.count('"') == 2 * MAX_WORDS
    assert match_expression("x" * 100_000) == '"' + "x" * 64 + '"*'
    assert terms("Crème-Brûlée") == ["crème", "brûlée"]


@pytest.fixture(scope="module")
def fts():
    conn = sqlite3.connect(":memory:")
    for statement in statements(MIGRATIONS[0].sql):
        conn.execute(statement)
    rows = [
        ("Wool socks", "Warm socks NEAR the fire", "clothing", "\nwool\n"),
        ("Crème brûlée", 'A "quoted" AND dessert', "food", "\nsweet\n"),
        ("t-shirt", "title: cotton", "clothing", ""),
    ]
    conn.executemany(
        "INSERT INTO listings (store, id, title, description, category, tags, price_sat, ships_to, created_at, "
        "listed_at) VALUES ('s', ?, ?, ?, ?, ?, 1, '', 0, 0)",
        [(str(i), *row) for i, row in enumerate(rows)],
    )
    yield conn
    conn.close()


def run(conn, text):
    expr = match_expression(text)
    if expr is None:
        return None
    return conn.execute(
        "SELECT rowid, snippet(listings_fts, 1, '[', ']', '…', 8), bm25(listings_fts) FROM listings_fts "
        "WHERE listings_fts MATCH ? ORDER BY rank LIMIT 5",
        (expr,),
    ).fetchall()


SYNTAX = ['"', "*", "-", "+", "^", ":", "(", ")", "{", "}", ",", "NEAR", "AND", "OR", "NOT", " ", "\t", "\x00"]
hostile = st.lists(st.one_of(st.sampled_from(SYNTAX), st.text(max_size=6)), max_size=20).map("".join)
anything = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=300)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(hostile, anything))
def test_any_text_runs_as_a_match_without_error(fts, text):
    run(fts, text)  # raises sqlite3.OperationalError on an FTS5 syntax error


def test_typed_operators_are_words(fts):
    assert [r[0] for r in run(fts, "socks NEAR")] == [1]  # "NEAR" is in the description
    assert [r[0] for r in run(fts, '"quoted" AND')] == [2]
    assert [r[0] for r in run(fts, "title: cotton")] == [3]
    assert run(fts, "socks OR dessert") == []
