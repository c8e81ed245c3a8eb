"""Outbound sessions: tor resolves names, each destination store gets its own SOCKS credentials.

A minimal SOCKS5 server on 127.0.0.1 records what the client sends, then
answers the HTTP request itself, so nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from node.adapters.net import TorHttp, onion_of
from node.core.crypto import StoreKey
from node.core.errors import BadRequest, Unreachable


class SocksRecorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int, str]] = []  # username, password, address type, host
        self.response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, n = await reader.readexactly(2)
        methods = await reader.readexactly(n)
        assert 2 in methods  # username/password offered
        writer.write(b"\x05\x02")
        _, ulen = await reader.readexactly(2)
        user = (await reader.readexactly(ulen)).decode()
        (plen,) = await reader.readexactly(1)
        password = (await reader.readexactly(plen)).decode()
        writer.write(b"\x01\x00")
        _, _, _, atyp = await reader.readexactly(4)
        if atyp == 3:
            (hlen,) = await reader.readexactly(1)
            host = (await reader.readexactly(hlen)).decode()
        else:
            host = (await reader.readexactly(4 if atyp == 1 else 16)).hex()
        await reader.readexactly(2)
        self.seen.append((user, password, atyp, host))
        writer.write(b"\x05\x00\x00\x01" + bytes(4) + struct.pack(">H", 0))
        await reader.readuntil(b"\r\n\r\n")
        writer.write(self.response)
        await writer.drain()
        writer.close()


@pytest.fixture
async def socks():
    recorder = SocksRecorder()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    recorder.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    yield recorder
    server.close()
    await server.wait_closed()


async def test_names_go_to_tor_unresolved_and_each_store_is_isolated(socks):
    http = TorHttp(("127.0.0.1", socks.port))
    a, b = StoreKey.generate().onion, StoreKey.generate().onion
    try:
        for onion in (a, b, a):
            url = f"http://{onion}.onion/.well-known/pasar/catalog.json"
            async with http.session(url).get(url) as resp:
                assert await resp.text() == "ok"
    finally:
        await http.close()
    assert [s[2] for s in socks.seen] == [3, 3, 3]  # domain names, never resolved locally
    assert [s[3] for s in socks.seen] == [f"{a}.onion", f"{b}.onion", f"{a}.onion"]
    creds = [(s[0], s[1]) for s in socks.seen]
    assert creds[0] == creds[2] and creds[0] != creds[1]


async def test_a_fresh_circuit_post_shares_no_identity_with_anything(socks):
    http = TorHttp(("127.0.0.1", socks.port))
    peer = StoreKey.generate().onion
    url = f"http://{peer}.onion/.well-known/pasar/gossip"
    try:
        await http.post(url, b"{}")  # the node's named exchange with this peer
        await http.post(url, b"{}", fresh_circuit=True)  # a stem
        await http.post(url, b"{}", fresh_circuit=True)  # another store's stem to the same peer
        await http.post(url, b"{}")
    finally:
        await http.close()
    creds = [(s[0], s[1]) for s in socks.seen]
    assert len(creds) == 4 and creds[0] == creds[3]
    assert len({creds[0], creds[1], creds[2]}) == 3  # each stem on an identity of its own


async def test_each_isolation_name_has_circuits_of_its_own_to_one_store(socks):
    """Two purchases from one node to one store, and the node's crawl of it, share no SOCKS identity (tor builds
    circuits per identity), while one purchase keeps its own across exchanges; forgetting one purchase's
    circuits leaves the others'."""
    http = TorHttp(("127.0.0.1", socks.port))
    store = StoreKey.generate().onion
    url = f"http://{store}.onion/api/v1/messages"
    try:
        for isolation in ("order-a", "order-b", "", "order-a"):
            await http.post(url, b"{}", isolation=isolation)
        kept_b = http.session(url, "order-b")
        await http.forget(url, "order-a")
        assert http.session(url, "order-b") is kept_b and not kept_b.closed
        await http.post(url, b"{}", isolation="order-a")
    finally:
        await http.close()
    creds = [(s[0], s[1]) for s in socks.seen]
    assert len(creds) == 5 and creds[0] == creds[3]
    assert len({creds[0], creds[1], creds[2]}) == 3
    assert creds[4] not in creds[:4]  # after forget: new circuits for that purchase only


async def test_forgetting_a_store_moves_it_to_new_circuits():
    http = TorHttp(("127.0.0.1", 9))
    url = f"http://{StoreKey.generate().onion}.onion/"
    try:
        session, before = http.session(url), http.isolation(onion_of(url))
        await http.forget(url)
        assert session.closed and http.isolation(onion_of(url)) != before
        assert http.session(url) is not session
    finally:
        await http.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "https://" + "a" * 56 + ".onion/",
        "http://127.0.0.1:8080/",
        "http://abc.onion/",
        "ftp://x",
    ],
)
def test_only_onion_urls_are_accepted(url):
    with pytest.raises(BadRequest):
        onion_of(url)


async def test_sessions_are_bounded():
    http = TorHttp(("127.0.0.1", 9), max_sessions=2)
    try:
        sessions = [http.session(f"http://{StoreKey.generate().onion}.onion/") for _ in range(4)]
        await asyncio.sleep(0)
        assert len(http._sessions) == 2
        assert sessions[0].closed and not sessions[3].closed
    finally:
        await http.close()


async def test_a_session_never_leaves_its_store(socks):
    http = TorHttp(("127.0.0.1", socks.port))
    a, b = StoreKey.generate().onion, StoreKey.generate().onion
    session = http.session(f"http://{a}.onion/")
    try:
        for url in (f"http://{b}.onion/", "http://example.com/", "http://127.0.0.1:9/"):
            with pytest.raises(BadRequest):
                await session.get(url)
    finally:
        await http.close()
    assert socks.seen == []  # refused before any connection


async def test_redirects_to_another_host_are_refused(socks):
    socks.response = b"HTTP/1.1 302 Found\r\nLocation: http://example.com/\r\nContent-Length: 0\r\n\r\n"
    http = TorHttp(("127.0.0.1", socks.port))
    url = f"http://{StoreKey.generate().onion}.onion/"
    try:
        with pytest.raises(BadRequest, match=r"example\.com"):
            await http.session(url).get(url)
    finally:
        await http.close()
    assert len(socks.seen) == 1


class FlakySocks(SocksRecorder):
    """Refuses the first ``refuse`` SOCKS connections (as tor does before it has the store's descriptor)."""

    def __init__(self, refuse: int) -> None:
        super().__init__()
        self.refuse = refuse
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse > 0:
            self.refuse -= 1
            writer.close()  # hang up during the SOCKS handshake
            return
        await super().handle(reader, writer)


@pytest.fixture
async def flaky():
    recorder = FlakySocks(refuse=2)
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    recorder.port = server.sockets[0].getsockname()[1]
    yield recorder
    server.close()
    await server.wait_closed()


async def test_get_retries_transient_failures_on_new_circuits(flaky):
    http = TorHttp(("127.0.0.1", flaky.port))
    url = f"http://{StoreKey.generate().onion}.onion/"
    retried: list[tuple[str, str]] = []
    try:
        reply = await http.get(
            url, attempts=5, pauses=(0.01,), before_retry=lambda: retried.append(http.isolation(onion_of(url)))
        )
    finally:
        await http.close()
    assert reply.status == 200 and reply.body == b"ok" and len(retried) == 2
    assert len({password for _, password in retried}) == 2  # each retry on new circuits


async def test_get_gives_up_after_its_attempts_with_the_cause():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there
    http = TorHttp(("127.0.0.1", port))
    url = f"http://{StoreKey.generate().onion}.onion/"
    try:
        with pytest.raises(Unreachable, match="3 attempts") as caught:
            await http.get(url, attempts=3, pauses=(0.01,))
    finally:
        await http.close()
    assert caught.value.__cause__ is not None and caught.value.status == 502


async def test_get_gives_up_at_its_deadline():
    held: list[asyncio.StreamWriter] = []

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepts, never answers the SOCKS greeting

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    http = TorHttp(("127.0.0.1", server.sockets[0].getsockname()[1]))
    url = f"http://{StoreKey.generate().onion}.onion/"
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(Unreachable):
            await http.get(url, deadline=0.3, attempts=50, pauses=(0.01,))
    finally:
        await http.close()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert loop.time() - started < 2


async def test_sessions_follow_tor_to_its_new_socks_port(socks):
    where: list[tuple[str, int] | None] = [None]
    http = TorHttp(lambda: where[0])
    url = f"http://{StoreKey.generate().onion}.onion/"
    try:
        with pytest.raises(Unreachable, match="no SOCKS port"):
            http.session(url)
        where[0] = ("127.0.0.1", 9)
        first = http.session(url)
        where[0] = ("127.0.0.1", socks.port)  # tor restarted on another port
        assert (await http.get(url)).status == 200
        assert first.closed
    finally:
        await http.close()
