"""The directory's pages over plain HTTP on a real node: hostile input, escaping, admin-only actions, blocklist.

Same seeded node as the browser tests (``test_directory_browser``), plus a store whose listing text
carries HTML and the snippet markers themselves.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from node.adapters import directory_schema
from node.adapters.sqlite import SQLiteDatabase
from node.core.config import Config
from node.core.crypto import StoreKey
from node.discovery import blocklist
from node.discovery.catalogs import verify_catalog
from node.discovery.directory import Directory, DirectoryLimits
from node.discovery.models import Source

from ..conftest import PASSWORD, Node, make_node
from ..pages import check_html
from .test_directory_browser import Seeded, _catalog, _seed

HOSTILE_TITLE = "<script>alert(1)</script> heron \ue000 trap"
HOSTILE_TEXT = 'heron <img src=x onerror=alert(1)> "quoted" \ue001 \ue000 unbalanced & more'


async def _seed_hostile(data_dir: Path) -> tuple[Seeded, str]:
    seeded = await _seed(data_dir)
    now = int(time.time())
    db = SQLiteDatabase(data_dir / "directory.sqlite", directory_schema.MIGRATIONS, synchronous="NORMAL")
    await db.open()
    try:
        directory = Directory(db, limits=DirectoryLimits.from_config(Config(data_dir=data_dir)))
        await directory.open()
        key = StoreKey.generate()
        raw = _catalog(key, "<b>Bold</b> store", [(HOSTILE_TITLE, "Prints", 5, HOSTILE_TEXT, False)], now)
        await directory.index(verify_catalog(raw, store=key.onion, now=now), source=Source.DIRECT, etag=None)
        return seeded, key.onion
    finally:
        await db.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Seeded, str]]:
    node = make_node(tmp_path_factory.mktemp("dirpages"))
    with ThreadPoolExecutor(1) as pool:
        seeded, hostile = pool.submit(lambda: asyncio.run(_seed_hostile(node.data_dir))).result(timeout=60)
    with open(node.data_dir / "pasar.toml", "a") as toml:
        toml.write("\ndirectory_public = true\n")
    node.run_args = ["--no-tor", "--page-size", "3"]
    node.start()
    try:
        yield node, seeded, hostile
    finally:
        node.stop()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return int(resp.status), resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace"), dict(exc.headers)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def post(url: str, fields: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, str]:
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.build_opener(_NoRedirect()).open(request, timeout=30) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")


def session(node: Node) -> dict[str, str]:
    """A logged-in admin session's cookie (the login form's POST)."""
    data = urllib.parse.urlencode({"password": PASSWORD}).encode()
    request = urllib.request.Request(node.admin_url + "/login", data=data, method="POST")
    try:
        urllib.request.build_opener(_NoRedirect()).open(request, timeout=30)
    except urllib.error.HTTPError as exc:
        assert exc.code == 303, exc.code
        cookie = exc.headers["Set-Cookie"].split(";")[0]
        return {"Cookie": cookie}
    raise AssertionError("login did not redirect")


def public(node: Node) -> str:
    url = node.lock_info().get("directory_url")
    assert isinstance(url, str), node.lock_info()
    return url


_STORE_LINK = re.compile(r'href="http://[a-z2-7]{56}\.onion/(?:listing/[A-Za-z0-9_-]{1,64})?"')


def test_listing_text_is_escaped_and_marks_are_balanced(site: tuple[Node, Seeded, str]) -> None:
    node, _, hostile = site
    status, html, _ = get(public(node) + "/directory?q=heron+trap")
    assert status == 200
    result = html[html.index('<ol class="dir-results">') :]
    assert "<script>alert" not in result and "&lt;script&gt;" in result
    assert "<img" not in result and "&lt;img src=x onerror=alert(1)&gt;" in result
    assert "\ue000" not in result and "\ue001" not in result
    assert result.count("<mark>") == result.count("</mark>") >= 1
    # The escaped text itself reads " onerror=" to check_html's plain-text scan: take it out first.
    check_html(_STORE_LINK.sub('href=""', html).replace("onerror=", ""), "search")
    status, html, _ = get(f"{public(node)}/directory/stores/{hostile}")
    assert status == 200 and "&lt;b&gt;Bold&lt;/b&gt; store" in html


@pytest.mark.parametrize(
    "query",
    [
        'q="',
        "q=*",
        "q=NEAR(heron",
        "q=-heron",
        "q=heron+AND+OR+NOT",
        "q=%22unbalanced",
        "q=" + "x" * 5000,
        "q=%00%01%ff",
        "page=999999&q=heron",
        "page=-1",
        "page=abc",
        "min_price=-5&max_price=abc",
        "max_price=99999999999999999999999",
        "ships_to=xx",
        "ships_to=%3Cscript%3E",
        "store=not-an-onion",
        "category=" + "c" * 500,
        "q=heron&q=egret",
    ],
)
def test_hostile_queries_never_fail(site: tuple[Node, Seeded, str], query: str) -> None:
    node = site[0]
    for base, headers in ((public(node), {}), (node.admin_url, session(node))):
        status, html, _ = get(f"{base}/directory?{query}", headers)
        assert status in (200, 422), (base, query, status, html[:500])
        assert "Search listings" in html and "<script" not in html.lower()


def test_bad_paths_are_404(site: tuple[Node, Seeded, str]) -> None:
    node, seeded, _ = site
    heron = seeded.stores["Heron Prints"]
    for path in (
        f"/directory/stores/{'a' * 56}",
        "/directory/stores/nope",
        f"/directory/stores/{heron}?page=999999",
        f"/directory/thumbs/{heron}/{'0' * 64}.jpg",
        f"/directory/thumbs/{heron}/..%2F..%2Fnode.key.jpg",
        "/directory/report?store=x&listing=y",
        f"/directory/report?store={heron}&listing=",
        "/directory/reports",  # admin only
        "/api/v1/node",
        "/login",
        "/.well-known/pasar/gossip",
        "/.well-known/pasar/catalog.json",
    ):
        status, _, _ = get(public(node) + path)
        assert status == 404, (path, status)


def test_public_pages_have_no_admin_actions(site: tuple[Node, Seeded, str]) -> None:
    node, seeded, _ = site
    for path in ("/directory?q=heron", f"/directory/stores/{seeded.stores['Heron Prints']}", "/directory/new"):
        status, html, _ = get(public(node) + path)
        assert status == 200
        assert "Block store" not in html and "csrf" not in html and "/directory/blocks" not in html
    status, html, _ = get(public(node) + "/", {})
    assert status == 200 and "Search listings" in html  # "/" leads to the search


def test_admin_block_needs_the_session_and_its_csrf_token(site: tuple[Node, Seeded, str]) -> None:
    node, seeded, _ = site
    form = {"kind": "store", "value": seeded.stores["Junk Shop"], "reason": "x"}
    assert post(node.admin_url + "/directory/blocks", form)[0] == 403  # not logged in
    assert post(node.admin_url + "/directory/blocks", form, node.auth)[0] == 403  # the API token is not a session
    cookie = session(node)
    assert post(node.admin_url + "/directory/blocks", form, cookie)[0] == 403  # no CSRF token
    assert post(node.admin_url + "/directory/blocks", {**form, "csrf": "forged"}, cookie)[0] == 403
    status, html, _ = get(node.admin_url + "/directory/reports", cookie)
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    assert status == 200 and csrf
    cross = {**cookie, "Origin": "http://evil.example"}
    assert post(node.admin_url + "/directory/blocks", {**form, "csrf": csrf.group(1)}, cross)[0] == 403
    status, html = post(
        node.admin_url + "/directory/blocks", {"kind": "planet", "value": "x", "csrf": csrf.group(1)}, cookie
    )
    assert status == 422 and "block a store or a tag" in html
    # The public listener has no block form at all.
    assert post(public(node) + "/directory/blocks", form)[0] == 404


def test_the_signed_blocklist_is_served(site: tuple[Node, Seeded, str]) -> None:
    node = site[0]
    status, body, headers = get(public(node) + "/.well-known/pasar/blocklist.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    signer = json.loads(body)["store"]
    info = json.loads(get(node.admin_url + "/api/v1/node", node.auth)[1])
    assert signer == info["directory_onion"]
    stores, tags, _ = blocklist.verify(body.encode(), signer=signer, now=int(time.time()))
    assert stores == [] and tags == []
