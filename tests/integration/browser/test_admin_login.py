"""Admin login, lock-out backoff, logout and cross-site refusal, in Chromium with JavaScript off."""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Callable
from urllib.parse import urlencode

from ..conftest import PASSWORD, Node
from .harness import Tab, api, serve


def test_login_with_the_right_password_opens_the_dashboard(admin: Tab, node: Node) -> None:
    assert admin.page.get_by_role("heading", name="Stores").is_visible()
    assert admin.page.get_by_role("button", name="Log out").is_visible()


def test_wrong_passwords_are_refused_and_each_failure_slows_the_next(node: Node, new_tab: Callable[[str], Tab]) -> None:
    tab = new_tab(node.admin_url)
    took = []
    for _ in range(5):
        tab.goto("/login")
        tab.page.get_by_label("Password").fill("not the password")
        start = time.monotonic()
        tab.submit("Log in", status=401)
        took.append(time.monotonic() - start)
        assert tab.page.get_by_role("alert").inner_text() == "wrong password"
    # The node waits 0.5 s more for each failure since the last success (the
    # password hash's own time varies with load, by over half a second on a busy
    # 2-core machine, so: lower bounds, and 2 s of added delay against a 1 s margin).
    assert took[1] >= 0.5 and took[2] >= 1.0 and took[4] >= 2.0 and took[4] - took[0] >= 1.0, took
    tab.goto("/login")
    tab.page.get_by_label("Password").fill(PASSWORD)
    start = time.monotonic()
    tab.submit("Log in")
    assert time.monotonic() - start >= 2.5  # even the right password waits its turn
    assert tab.page.url == node.admin_url + "/"


def test_logout_ends_the_session(admin: Tab, node: Node) -> None:
    admin.submit("Log out")
    assert admin.page.url == node.admin_url + "/login"
    admin.goto("/")
    assert admin.page.url == node.admin_url + "/login"  # redirected: the session is gone


def _evil_form(action: str, csrf: str) -> bytes:
    return (
        f'<!doctype html><title>win a prize</title><form method="post" action="{action}">'
        f'<input type="hidden" name="name" value="Evil store"><input type="hidden" name="csrf" value="{csrf}">'
        '<button type="submit">Claim prize</button></form>'
    ).encode()


def test_a_cross_site_form_post_to_the_admin_is_refused(admin: Tab, node: Node) -> None:
    # Worst case: the attacking page even knows the form token.
    csrf = admin.page.locator('input[name="csrf"]').first.get_attribute("value") or ""
    assert csrf
    before = api(node, "GET", "/api/v1/stores")
    # 127.0.0.2 is another site than 127.0.0.1 (an IP address is its own site).
    with serve("127.0.0.2", {"/": ({}, _evil_form(f"{node.admin_url}/stores", csrf))}) as evil:
        admin.goto(evil + "/")
        admin.submit("Claim prize", status=403)
        # Refused by the origin check itself (the SameSite=Strict cookie alone would also stop it,
        # as "not logged in": this makes sure the check that covers every listener works).
        assert "cross-site request refused" in admin.page.content()
    assert api(node, "GET", "/api/v1/stores") == before
    admin.goto("/")  # still logged in: nothing else happened
    assert admin.page.url == node.admin_url + "/"


def _raw_login(node: Node) -> tuple[str, str]:
    """A session cookie and form token, as a script (not a browser) gets them."""
    conn = http.client.HTTPConnection("127.0.0.1", node.admin_port, timeout=30)
    try:
        body = urlencode({"password": PASSWORD})
        conn.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 303, resp.status
        cookie = (resp.getheader("Set-Cookie") or "").split(";", 1)[0]
        conn.request("GET", "/", headers={"Cookie": cookie})
        resp = conn.getresponse()
        match = re.search(r'name="csrf" value="([^"]+)"', resp.read().decode())
        assert match
        return cookie, match.group(1)
    finally:
        conn.close()


def test_a_post_marked_cross_site_or_same_site_is_refused(node: Node) -> None:
    cookie, csrf = _raw_login(node)
    before = api(node, "GET", "/api/v1/stores")
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
    for site in ("cross-site", "same-site"):
        conn = http.client.HTTPConnection("127.0.0.1", node.admin_port, timeout=30)
        try:
            body = urlencode({"name": f"From {site}", "csrf": csrf})
            conn.request("POST", "/stores", body, {**headers, "Sec-Fetch-Site": site, "Sec-Fetch-Mode": "navigate"})
            resp = conn.getresponse()
            assert resp.status == 403, (site, resp.status, resp.read()[:300])
        finally:
            conn.close()
    assert api(node, "GET", "/api/v1/stores") == before
