"""Per-store listeners: stable ports, and one store's failure leaves the others running."""

from __future__ import annotations

import json
import socket

import aiohttp

from .conftest import free_port


async def test_busy_port_fails_only_that_store(node_factory):
    node = node_factory()
    base = free_port()
    first = node.cli("store", "create", "Blocked", PASAR_STORE_PORT_BASE=str(base)).stdout.strip()
    second = node.cli("store", "create", "Fine", PASAR_STORE_PORT_BASE="0").stdout.strip()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base))
        squatter.listen()
        node.start()
        async with aiohttp.ClientSession(node.admin_url, headers=node.auth) as s, s.get("/api/v1/stores") as r:
            stores = {x["address"]: x for x in await r.json()}
    blocked, fine = stores[first], stores[second]
    assert blocked["status"].startswith("error: cannot listen on port") and blocked["local_url"] is None
    assert fine["status"] == "local"
    async with aiohttp.ClientSession() as s, s.get(fine["local_url"] + "/") as r:
        assert r.status == 200 and "Fine" in await r.text()


async def test_store_keeps_its_port_across_restarts(node_factory):
    node = node_factory()
    base = free_port()
    address = node.cli("store", "create", "Stable", PASAR_STORE_PORT_BASE=str(base)).stdout.strip()
    urls = []
    for _ in range(2):
        node.start()
        urls.append(json.loads(node.cli("store", "list", "--json").stdout)[0]["local_url"])
        node.stop()
    assert urls == [f"http://127.0.0.1:{base}"] * 2
    assert json.loads(node.cli("store", "list", "--json").stdout)[0]["address"] == address
