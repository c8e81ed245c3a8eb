"""Chromium pages that record everything a no-JavaScript page must not do, and small helpers.

A ``Tab`` is one Playwright page in its own context (own cookie jar), with
JavaScript off. Its context routes every request: one to a host that is not
loopback is aborted and recorded, and so are console errors (CSP violations
show up there), failed requests and sub-resources answered with an error.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import ipaddress
import json
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from PIL import Image, ImageChops
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request, Response, Route, ViewportSize

from ..conftest import Node

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}


def is_loopback(url: str) -> bool:
    """True for URLs that cannot leave this machine (loopback hosts, data:, about:)."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "about", "blob"):
        return True
    host = (parts.hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def launch_chromium(pw: Playwright) -> Browser:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is missing: run deploy/install.sh --test"
    return pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=30_000)


@dataclass
class Tab:
    """One watched page; ``problems`` must be empty when the test ends."""

    page: Page
    problems: list[str] = field(default_factory=list)

    def attach(self) -> None:
        context = self.page.context
        context.route("**/*", self._route)
        context.on("console", self._console)
        context.on("weberror", lambda err: self.problems.append(f"page error: {err.error}"))
        context.on("requestfailed", self._failed)
        context.on("response", self._response)

    def _route(self, route: Route) -> None:
        url = route.request.url
        if is_loopback(url):
            route.continue_()
        else:
            self.problems.append(f"request to another host: {url}")
            route.abort("blockedbyclient")

    def _console(self, msg: ConsoleMessage) -> None:
        # "Failed to load resource: ... status of 4xx" duplicates _response (documents may fail on purpose).
        if msg.type == "error" and not msg.text.startswith("Failed to load resource: the server responded"):
            where = msg.page.url if msg.page else "?"
            self.problems.append(f"console error on {where}: {msg.text}")

    def _failed(self, request: Request) -> None:
        if is_loopback(request.url):  # other hosts are recorded by _route
            self.problems.append(f"request failed: {request.url} ({request.failure})")

    def _response(self, response: Response) -> None:
        # A document may answer 4xx on purpose (tests check it); a sub-resource may not.
        if response.status >= 400 and response.request.resource_type != "document":
            self.problems.append(f"{response.status} for {response.request.resource_type} {response.url}")

    def goto(self, url: str, status: int = 200) -> Response:
        response = self.page.goto(url)
        assert response is not None, url
        assert response.status == status, (url, response.status, self.page.content()[:2000])
        return response

    def submit(self, button: str, status: int = 200) -> Response:
        """Click the submit button named ``button`` and wait for the page it leads to."""
        with self.page.expect_navigation() as nav:
            self.page.get_by_role("button", name=button, exact=True).click()
        response = nav.value
        assert response is not None, button
        assert response.status == status, (button, response.status, self.page.content()[:2000])
        return response

    def assert_clean(self) -> None:
        assert not self.problems, "the browser saw:\n" + "\n".join(self.problems)


def api(node: Node, method: str, path: str, body: Any = None, *, raw: bytes | None = None) -> Any:
    """The node's JSON API with its bearer token (for setting up and checking state)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {**node.auth, "Content-Type": "application/octet-stream" if raw is not None else "application/json"}
    request = urllib.request.Request(node.admin_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            text = resp.read()
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None
    return json.loads(text) if text else None


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return bytes(resp.read())


def check_render(png: bytes, what: str, *, unlike: dict[str, bytes] | None = None) -> None:
    """A screenshot shows a page: the viewport's size, many colours, and not one of ``unlike``."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    assert img.size == (VIEWPORT["width"], VIEWPORT["height"]), (what, img.size)
    colours = img.getcolors(maxcolors=4096)
    assert colours is None or len(colours) >= 16, f"{what}: blank screenshot ({len(colours)} colours)"
    for name, other in (unlike or {}).items():
        assert not _same_image(img, other), f"{what}: renders as {name}"


def _same_image(img: Image.Image, png: bytes) -> bool:
    other = Image.open(io.BytesIO(png)).convert("RGB")
    if other.size != img.size:
        return False
    changed = ImageChops.difference(img, other).convert("L").point(lambda v: 255 if v else 0).histogram()[255]
    return changed < img.size[0] * img.size[1] // 100  # under 1% of pixels differ


def save(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class _Pages(http.server.BaseHTTPRequestHandler):
    pages: ClassVar[dict[str, tuple[dict[str, str], bytes]]] = {}

    def do_GET(self) -> None:
        headers, body = self.pages.get(self.path, ({}, b""))
        self.send_response(200 if self.path in self.pages else 404)
        for name, value in {"Content-Type": "text/html; charset=utf-8", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output quiet


@contextlib.contextmanager
def serve(host: str, pages: dict[str, tuple[dict[str, str], bytes]]) -> Iterator[str]:
    """Serve fixed ``pages`` (path -> (headers, body)) on ``host``; yields the base URL."""
    handler = type("Pages", (_Pages,), {"pages": pages})
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
