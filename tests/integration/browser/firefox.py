"""Debian's firefox-esr (Tor Browser's base), headless, JavaScript off, driven over WebDriver BiDi.

Firefox has WebDriver BiDi built in (``--remote-debugging-port``), so no
driver is downloaded: one WebSocket (aiohttp, on its own thread and event
loop, so Playwright's sync API in the test thread is undisturbed) navigates,
types, clicks and takes screenshots.

Three guards keep it on loopback. The profile turns off every background
service that phones home (``PREFS``), and points Firefox's HTTP and TLS
proxy at a recorder on 127.0.0.1: loopback is never proxied, so anything
that recorder sees is a request to another host, and fails the session.
``MOZ_DISABLE_NONLOCAL_CONNECTIONS=1`` (what Mozilla's own test harnesses
set) refuses non-local connections outright; without it the remote-settings
client still polls firefox.settings.services.mozilla.com, whatever the
prefs say. And each request a page makes is checked from BiDi's network
events.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp

from .harness import VIEWPORT, is_loopback

T = TypeVar("T")
START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 30.0
_LISTENING = re.compile(r"WebDriver BiDi listening on (ws://127\.0\.0\.1:\d+)")

# Background traffic off (telemetry, studies, updates, Safe Browsing, captive
# portal and connectivity checks, remote settings, push, Pocket and new-tab
# feeds, search suggestions, speculative connections and prefetching, DoH,
# OCSP, geolocation, media plugins, add-on updates and blocklists).
PREFS: dict[str, bool | int | str] = {
    "javascript.enabled": False,
    "app.update.auto": False,
    "app.update.checkInstallTime": False,
    "app.update.disabledForTesting": True,
    "app.normandy.enabled": False,
    "app.normandy.api_url": "",
    "app.shield.optoutstudies.enabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.usage.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.server": "",
    "toolkit.coverage.endpoint.base": "",
    "browser.ping-centre.telemetry": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.safebrowsing.provider.google.updateURL": "",
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "captivedetect.canonicalURL": "",
    "services.settings.server": "data:,#remote-settings-dummy/v1",
    "security.remote_settings.crlite_filters.enabled": False,
    "security.remote_settings.intermediates.enabled": False,
    "security.OCSP.enabled": 0,
    "dom.push.enabled": False,
    "dom.push.connection.enabled": False,
    "dom.push.serverURL": "",
    "extensions.pocket.enabled": False,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "extensions.blocklist.enabled": False,
    "browser.search.suggest.enabled": False,
    "browser.search.update": False,
    "browser.urlbar.suggest.searches": False,
    "browser.urlbar.quicksuggest.enabled": False,
    "browser.urlbar.speculativeConnect.enabled": False,
    "browser.places.speculativeConnect.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.newtabpage.activity-stream.feeds.telemetry": False,
    "browser.newtabpage.activity-stream.telemetry": False,
    "browser.newtabpage.activity-stream.feeds.section.topstories": False,
    "browser.newtabpage.activity-stream.feeds.topsites": False,
    "browser.newtabpage.activity-stream.showSponsored": False,
    "browser.newtabpage.activity-stream.showSponsoredTopSites": False,
    "browser.newtabpage.activity-stream.default.sites": "",
    "browser.topsites.contile.enabled": False,
    "browser.discovery.enabled": False,
    "browser.startup.page": 0,
    "browser.startup.homepage": "about:blank",
    "browser.startup.homepage_override.mstone": "ignore",
    "startup.homepage_welcome_url": "",
    "startup.homepage_welcome_url.additional": "",
    "browser.aboutwelcome.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.region.network.url": "",
    "browser.region.update.enabled": False,
    "geo.enabled": False,
    "geo.provider.network.url": "",
    "media.gmp-manager.url": "",
    "media.gmp-manager.updateEnabled": False,
    "media.gmp-provider.enabled": False,
    "media.eme.enabled": False,
    "media.gmp-gmpopenh264.enabled": False,
    "media.gmp-widevinecdm.enabled": False,
    "identity.fxaccounts.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.dns.disablePrefetchFromHTTPS": True,
    "network.prefetch-next": False,
    "network.predictor.enabled": False,
    "network.http.speculative-parallel-limit": 0,
    "network.trr.mode": 5,
    "browser.sessionstore.resume_from_crash": False,
    "toolkit.startup.max_resumed_crashes": -1,
    "network.proxy.type": 1,
    "network.proxy.share_proxy_settings": False,
    "network.proxy.allow_hijacking_localhost": False,
    "network.proxy.no_proxies_on": "",
}


REFUSED = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class FirefoxError(AssertionError):
    pass


class ProxyRecorder:
    """A loopback port that records the first line of every connection and refuses it."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = int(self._sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                line = b""
                try:
                    line = conn.recv(4096).split(b"\r\n", 1)[0]
                    conn.sendall(REFUSED)  # an answer, so Firefox does not retry
                except OSError:
                    line = line or b"(no request line)"
                self.seen.append(line.decode("latin-1"))

    def close(self) -> None:
        with contextlib.suppress(OSError):  # not connected: nothing to shut down
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._sock.close()
        self._thread.join(timeout=5)


def user_js(proxy_port: int) -> str:
    prefs = {
        **PREFS,
        "network.proxy.http": "127.0.0.1",
        "network.proxy.http_port": proxy_port,
        "network.proxy.ssl": "127.0.0.1",
        "network.proxy.ssl_port": proxy_port,
    }
    return "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())


def _env() -> dict[str, str]:
    # Mozilla's own test switch: Firefox refuses connections to non-local
    # addresses and its remote-settings client (which ignores the server pref
    # in release builds otherwise) stays quiet.
    return {**os.environ, "MOZ_DISABLE_NONLOCAL_CONNECTIONS": "1", "MOZ_CRASHREPORTER_DISABLE": "1"}


class Firefox:
    """One firefox-esr process and one BiDi session, called synchronously from tests."""

    def __init__(self, workdir: Path) -> None:
        executable = shutil.which("firefox-esr")
        assert executable, "Debian's firefox-esr is missing: run deploy/install.sh --test"
        self.recorder = ProxyRecorder()
        profile = workdir / "profile"
        profile.mkdir(parents=True)
        (profile / "user.js").write_text(user_js(self.recorder.port))
        self.problems: list[str] = []
        self.loads = 0
        self.last_document: tuple[str, int] = ("", 0)
        self._log = open(workdir / "firefox.log", "w")
        self._pump: threading.Thread | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-remote", "--profile", str(profile), "--remote-debugging-port", "0"],
            stdout=self._log,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=_env(),
        )
        try:
            url = self._wait_listening()
            self._thread.start()
            self.context = self._run(self._connect(url))
        except BaseException:
            self.close()
            raise

    # -- process and connection -------------------------------------------
    def _wait_listening(self) -> str:
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stderr is not None
        stderr = self.proc.stderr

        def pump() -> None:
            with stderr:  # closed at EOF (firefox exited): an unclosed pipe warns later, in another test
                for line in stderr:
                    self._log.write(line)
                    lines.put(line)

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if match := _LISTENING.search(line):
                return match.group(1)
        raise FirefoxError(f"firefox-esr did not open WebDriver BiDi within {START_TIMEOUT}s")

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = COMMAND_TIMEOUT + 5) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _connect(self, url: str) -> str:
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(f"{url}/session", max_msg_size=64 * 1024 * 1024)
        self._reader = asyncio.create_task(self._read())
        await self._send("session.new", {"capabilities": {}})
        events = ["log.entryAdded", "network.beforeRequestSent", "network.responseCompleted", "browsingContext.load"]
        await self._send("session.subscribe", {"events": events})
        tree = await self._send("browsingContext.getTree", {"maxDepth": 0})
        context = str(tree["contexts"][0]["context"])
        await self._send("browsingContext.setViewport", {"context": context, "viewport": VIEWPORT})
        return context

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            elif data.get("type") == "event":
                self._event(data["method"], data["params"])
        for future in self._pending.values():
            future.set_exception(FirefoxError("firefox-esr closed the BiDi connection"))

    async def _send(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._pending[self._next_id] = future
        await self._ws.send_json({"id": self._next_id, "method": method, "params": params})
        reply = await asyncio.wait_for(future, COMMAND_TIMEOUT)
        if reply.get("type") == "error":
            raise FirefoxError(f"{method}: {reply.get('error')}: {reply.get('message')}")
        return dict(reply["result"])

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "network.beforeRequestSent":
            url = params["request"]["url"]
            if not is_loopback(url):
                self.problems.append(f"firefox: request to another host: {url}")
        elif method == "network.responseCompleted":
            url, status = params["request"]["url"], int(params["response"]["status"])
            if params.get("navigation") and params.get("context") == getattr(self, "context", None):
                self.last_document = (url, status)
            elif status >= 400 and urlsplit(url).path != "/favicon.ico":  # Firefox asks by itself
                self.problems.append(f"firefox: {status} for sub-resource {url}")
        elif method == "log.entryAdded" and params.get("level") == "error":
            self.problems.append(f"firefox console error: {params.get('text')}")
        elif method == "browsingContext.load" and params.get("context") == getattr(self, "context", None):
            self.loads += 1

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._run(self._send(method, params))

    # -- what tests use -----------------------------------------------------
    def goto(self, url: str) -> int:
        """Open ``url`` and wait until it has loaded; the final document's HTTP status."""
        self.last_document = ("", 0)
        self.call("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})
        return self._document_status()

    def _document_status(self) -> int:
        deadline = time.monotonic() + 5
        while self.last_document[1] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.last_document[1]

    def screenshot(self) -> bytes:
        result = self.call("browsingContext.captureScreenshot", {"context": self.context, "origin": "viewport"})
        return base64.b64decode(result["data"])

    def _element(self, css: str) -> dict[str, str]:
        locator = {"type": "css", "value": css}
        nodes = self.call("browsingContext.locateNodes", {"context": self.context, "locator": locator})["nodes"]
        if len(nodes) != 1:
            raise FirefoxError(f"{len(nodes)} elements match {css!r} on {self.last_document[0]}")
        return {"sharedId": nodes[0]["sharedId"]}

    def _click(self, css: str) -> None:
        origin = {"type": "element", "element": self._element(css)}
        steps = [
            {"type": "pointerMove", "x": 0, "y": 0, "origin": origin},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerUp", "button": 0},
        ]
        mouse = {"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": steps}
        self.call("input.performActions", {"context": self.context, "actions": [mouse]})

    def type_into(self, css: str, text: str) -> None:
        """Click a text box and type ``text`` as key presses (no script runs)."""
        self._click(css)
        keys = [step for ch in text for step in ({"type": "keyDown", "value": ch}, {"type": "keyUp", "value": ch})]
        actions = [{"type": "key", "id": "kb", "actions": keys}]
        self.call("input.performActions", {"context": self.context, "actions": actions})

    def submit(self, css: str, timeout: float = 20.0) -> int:
        """Click a submit button and wait for the page it leads to; that page's HTTP status."""
        before, self.last_document = self.loads, ("", 0)
        self._click(css)
        deadline = time.monotonic() + timeout
        while self.loads == before:
            if time.monotonic() > deadline:
                raise FirefoxError(f"clicking {css!r} loaded no page within {timeout}s")
            time.sleep(0.02)
        return self._document_status()

    def close(self) -> None:
        if self._thread.is_alive():
            try:
                self.call("browser.close", {})
            except (FirefoxError, TimeoutError, aiohttp.ClientError, ConnectionError):
                pass  # the process is stopped below in any case
            self._run(self._disconnect(), timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self._pump is not None:
            self._pump.join(timeout=10)  # it reads stderr to EOF and closes it, then the log can close
        self._log.close()
        self.recorder.close()

    async def _disconnect(self) -> None:
        if hasattr(self, "_ws"):
            await self._ws.close()
        if hasattr(self, "_reader"):
            await asyncio.wait([self._reader], timeout=5)
        if hasattr(self, "_http"):
            await self._http.close()
