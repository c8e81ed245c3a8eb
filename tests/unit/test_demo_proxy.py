"""The demo's admin-API and bitcoind-RPC calls never go through ``$http_proxy`` (review 2, #1).

urllib's default opener sends even 127.0.0.1 requests to the proxy named in the environment, with the admin
token or bitcoind's cookie in their headers. A stub server on 127.0.0.1 answers; a listener posing as the
proxy must receive nothing.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from node.demo import nodes
from node.demo.api import Admin, wait_for
from node.demo.bitcoind import Bitcoind
from node.demo.state import DemoError


class _Stub(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, str]]  # method, path, Authorization

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        reply = {"result": {"chain": "regtest"}, "error": None} if "method" in body else {"ok": True}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[int, list[tuple[str, str, str]]]]:
    seen: list[tuple[str, str, str]] = []
    handler = type("Handler", (_Stub,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A listener named by every proxy variable (no ``no_proxy``): what connects to it went to "the proxy"."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, url)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert urllib.request.getproxies()["http"] == url  # urllib's default opener would use it
    with listener:
        yield listener


def _nothing_reached(listener: socket.socket) -> bool:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def test_admin_calls_go_straight_to_the_node_not_to_the_proxy(
    tmp_path: Path, stub: tuple[int, list[tuple[str, str, str]]], proxy: socket.socket
) -> None:
    port, seen = stub
    (tmp_path / "admin.token").write_text("SECRET-TOKEN\n")
    admin = Admin("buyer", port, tmp_path)
    assert admin.call("GET", "/stores", timeout=10) == {"ok": True}
    assert admin.call("POST", "/purchases", {"qty": 1}, timeout=10) == {"ok": True}
    assert seen == [
        ("GET", "/api/v1/stores", "Bearer SECRET-TOKEN"),
        ("POST", "/api/v1/purchases", "Bearer SECRET-TOKEN"),
    ]
    assert _nothing_reached(proxy)


def test_bitcoind_rpc_goes_straight_to_bitcoind_not_to_the_proxy(
    tmp_path: Path, stub: tuple[int, list[tuple[str, str, str]]], proxy: socket.socket
) -> None:
    port, seen = stub
    core = Bitcoind(tmp_path, Path("/nonexistent/bitcoind"))
    core.rpc_port = port
    core.cookie.parent.mkdir(parents=True)
    core.cookie.write_text("__cookie__:abc\n")
    assert core.call("getblockchaininfo", timeout=10) == {"chain": "regtest"}
    assert core.call("getnewaddress", "", "bech32", wallet="buyer", timeout=10) == {"chain": "regtest"}
    assert [(m, p) for m, p, _ in seen] == [("POST", "/"), ("POST", "/wallet/buyer")]
    assert all(auth.startswith("Basic ") for _, _, auth in seen)
    assert _nothing_reached(proxy)


def test_the_nodes_get_no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTPS_PROXY", "all_proxy", "no_proxy", "PASAR_ADMIN_PORT"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("LANG", "C.UTF-8")
    got = nodes.env("pw")
    assert not [k for k in got if k.lower().endswith("_proxy")]
    assert got["PASAR_ADMIN_PASSWORD"] == "pw" and "PASAR_ADMIN_PORT" not in got and got["LANG"] == "C.UTF-8"


def test_a_wait_given_up_by_its_caller_ends_at_once() -> None:
    """(#6) A failed or interrupted demo does not wait TOR_REACH for the other stores' polls."""
    given_up, calls = threading.Event(), [0]

    def never() -> bool:
        calls[0] += 1
        return False

    timer = threading.Timer(0.3, given_up.set)
    timer.start()
    started = time.monotonic()
    with pytest.raises(DemoError, match="stopped waiting"):
        wait_for("a store reaches the moderator", never, 600, pause=5, stop=given_up)
    timer.join()
    assert time.monotonic() - started < 4 and calls[0] == 1
