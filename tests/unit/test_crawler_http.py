"""LoopbackHttp: onion URLs mapped to real loopback listeners; offline onions and non-loopback bases refused."""

from __future__ import annotations

import pytest
from aiohttp import web

from node.adapters.loophttp import LoopbackHttp
from node.core.errors import Unreachable

ONION = "a" * 56


@pytest.fixture
async def base():
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(
            body=body or request.path_qs.encode(),
            headers={"X-Seen": request.headers.get("If-None-Match", "")},
            status=201 if body else 200,
        )

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 100_000)

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_get_and_post_go_to_the_resolved_loopback_base(base):
    http = LoopbackHttp(lambda onion: base + "/prefix" if onion == ONION else None)
    try:
        reply = await http.get(f"http://{ONION}.onion/a/b?c=1", headers={"If-None-Match": '"x"'})
        assert (reply.status, reply.body, reply.headers["X-Seen"]) == (200, b"/prefix/a/b?c=1", '"x"')
        reply = await http.post(f"http://{ONION}.onion/gossip", b"hello")
        assert (reply.status, reply.body) == (201, b"hello")
        with pytest.raises(Unreachable):
            await http.get(f"http://{'b' * 56}.onion/")
    finally:
        await http.close()


async def test_size_cap_and_refusals(base):
    http = LoopbackHttp(lambda onion: base)
    try:
        with pytest.raises(Unreachable, match="limit"):
            await http.get(f"http://{ONION}.onion/big", max_bytes=1000)
        assert len((await http.get(f"http://{ONION}.onion/big", max_bytes=100_000)).body) == 100_000
        with pytest.raises(ValueError, match="onion"):
            await http.get("http://example.com/")
    finally:
        await http.close()
    outside = LoopbackHttp(lambda onion: "http://192.0.2.1:80")
    with pytest.raises(ValueError, match="non-loopback"):
        await outside.get(f"http://{ONION}.onion/")
    await outside.close()


async def test_a_closed_port_is_unreachable():
    http = LoopbackHttp(lambda onion: "http://127.0.0.1:1")
    try:
        with pytest.raises(Unreachable):
            await http.get(f"http://{ONION}.onion/", deadline=5)
    finally:
        await http.close()
