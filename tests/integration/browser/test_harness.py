"""The harness itself: a page that misbehaves is caught in both browsers (else every other test proves nothing)."""

from __future__ import annotations

from collections.abc import Callable

from .firefox import Firefox
from .harness import Tab, check_render, serve

CSP = {"Content-Security-Policy": "default-src 'self'; script-src 'none'; style-src 'self'"}
CSP_PAGE = b"<!doctype html><title>csp</title><h1 style='color:red'>inline style, refused by the CSP</h1>"
LEAK_PAGE = (
    b"<!doctype html><title>leak</title><h1>leak</h1>"
    b"<link rel=stylesheet href=/missing.css><img src='http://198.51.100.7/track.png' alt=''>"
)
GOOD_PAGE = b"<!doctype html><title>good</title><h1>Good page</h1><p>" + b"words " * 200 + b"</p>"
PAGES = {"/csp": (CSP, CSP_PAGE), "/leak": ({}, LEAK_PAGE), "/good": (CSP, GOOD_PAGE)}


def test_chromium_records_other_hosts_errors_and_csp_violations(new_tab: Callable[[str], Tab]) -> None:
    with serve("127.0.0.1", PAGES) as base:
        tab = new_tab(base)
        tab.goto("/good")
        assert tab.problems == []
        tab.goto("/leak")
        tab.goto("/csp")
        seen, tab.problems[:] = "\n".join(tab.problems), []
    assert "request to another host: http://198.51.100.7/track.png" in seen
    assert "404 for stylesheet" in seen and "/missing.css" in seen
    assert "console error" in seen and "Content Security Policy" in seen, seen


def test_firefox_records_other_hosts_and_failed_resources(firefox: Firefox) -> None:
    with serve("127.0.0.1", PAGES) as base:
        firefox.problems.clear()
        assert firefox.goto(f"{base}/good") == 200
        check_render(firefox.screenshot(), "good page")
        assert firefox.problems == []
        assert firefox.goto(f"{base}/leak") == 200
        assert firefox.goto(f"{base}/csp") == 200
        seen, firefox.problems[:] = "\n".join(firefox.problems), []
    assert "request to another host: http://198.51.100.7/track.png" in seen, seen
    assert "404 for sub-resource" in seen and "/missing.css" in seen, seen
    # The request also reached the sink proxy (and no further); forget it.
    assert any("198.51.100.7" in line for line in firefox.recorder.seen), firefox.recorder.seen
    firefox.recorder.seen.clear()
