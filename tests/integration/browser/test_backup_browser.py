"""The admin's backup page in Chromium with JavaScript off: the passphrase form downloads the encrypted file.

The downloaded file restores (in this process) into a data dir holding the node's stores. The form is
refused without its CSRF token, and accepted with ``Origin: null`` (a same-origin form POST from a page
that sends no referrer, as Tor Browser's safest mode does).
"""

from __future__ import annotations

import http.client
import re
import time
from pathlib import Path
from urllib.parse import urlencode

from node.adapters import backup as files

from ..conftest import PASSWORD, Node
from .harness import Tab, api

PASSPHRASE = "browser backup passphrase"


def _fill(tab: Tab, first: str, again: str) -> None:
    tab.page.get_by_label("Passphrase", exact=True).fill(first)
    tab.page.get_by_label("Passphrase again").fill(again)


def test_the_backup_page_downloads_a_file_that_restores(admin: Tab, node: Node, tmp_path: Path) -> None:
    made = api(node, "POST", "/api/v1/stores", {"name": "Backed up shop", "description": "kept safe"})
    admin.goto("/")
    with admin.page.expect_navigation():
        admin.page.get_by_role("link", name="Backup").click()
    assert admin.page.get_by_role("heading", name="Backup", exact=True).is_visible()
    _fill(admin, PASSPHRASE, PASSPHRASE + "!")
    admin.submit("Download backup", status=422)
    assert "the two passphrases differ" in admin.page.content()
    assert PASSPHRASE not in admin.page.content()  # never re-rendered into the form
    _fill(admin, PASSPHRASE, PASSPHRASE)
    with admin.page.expect_download(timeout=60_000) as download:
        admin.page.get_by_role("button", name="Download backup").click()
    # Not the scheduled backups' name (pasar-backup-<node>-<time>): a download saved into backup_dir is never rotated.
    assert re.fullmatch(r"pasar-download-\d{8}T\d{6}Z\.pasarbak", download.value.suggested_filename)
    # A navigation that turns into a download ends as an aborted request in Chromium: expected, only that one.
    aborted = f"request failed: {node.admin_url}/backup (net::ERR_ABORTED)"
    assert admin.problems == [aborted], admin.problems
    admin.problems.clear()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    manifest = files.restore(saved, tmp_path / "restored", PASSPHRASE)
    assert made["onion"] in manifest.store_onions
    admin.goto("/backup")  # recorded once the last byte was sent, naming no (deleted) file
    content = admin.page.content()
    assert "UTC (ok): downloaded from the admin page: " in content and ".download-" not in content


def _session(node: Node) -> tuple[str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", node.admin_port, timeout=30)
    try:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        conn.request("POST", "/login", urlencode({"password": PASSWORD}), form)
        resp = conn.getresponse()
        resp.read()
        cookie = (resp.getheader("Set-Cookie") or "").split(";", 1)[0]
        conn.request("GET", "/backup", headers={"Cookie": cookie})
        match = re.search(r'name="csrf" value="([^"]+)"', conn.getresponse().read().decode())
        assert match
        return cookie, match.group(1)
    finally:
        conn.close()


def _post(node: Node, cookie: str, fields: dict[str, str]) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", node.admin_port, timeout=120)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie, "Origin": "null"}
    conn.request("POST", "/backup", urlencode(fields), headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_the_form_needs_its_token_and_accepts_origin_null(node: Node) -> None:
    cookie, csrf = _session(node)
    fields = {"passphrase": PASSPHRASE, "passphrase_again": PASSPHRASE}
    refused = _post(node, cookie, fields)
    assert refused.status == 403
    sent = _post(node, cookie, {**fields, "csrf": csrf})
    assert sent.status == 200, sent.status
    assert sent.getheader("Content-Disposition", "").startswith("attachment;")
    assert sent.getheader("Content-Type") == "application/octet-stream"
    deadline = time.monotonic() + 30  # the node deletes its copy once the last byte is sent
    while [p for p in node.data_dir.iterdir() if p.name.startswith((".download-", ".backup-"))]:
        assert time.monotonic() < deadline, "the node kept the downloaded backup's file"
        time.sleep(0.05)
