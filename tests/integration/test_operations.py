"""Each operation of the table, run on the data directory and through the running node's API.

The CLI picks one of the two backends (node/cli/backends.py); both must give
the same JSON and raise the same error class with the same code.
"""

from __future__ import annotations

import io
import json
import urllib.request
from typing import Any

import pytest
from PIL import Image

from node import __version__
from node import operations as ops
from node.cli.backends import Backend, LocalBackend, RemoteBackend, open_backend
from node.core import config as cfg
from node.core import errors

from .conftest import make_node
from .test_orders_api import payment_operations

# Differ by design: a running node has listeners and statuses, the data directory has none.
BY_CONTEXT = {"status", "state", "local_url"}


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "teal").save(buf, format="PNG")
    return buf.getvalue()


def _shape(value: object) -> object:
    """The JSON's structure: its keys, not the values (ids, times and ports differ)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return "value"


def _without_context(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_context(v) for k, v in value.items() if k not in BY_CONTEXT}
    if isinstance(value, list):
        return [_without_context(v) for v in value]
    return value


async def _reads(b: Backend, onion: str, listing_id: str) -> dict[str, object]:
    return {
        "list_stores": await b.run(ops.stores.list_stores, ops.NoInput()),
        "get_store": await b.run(ops.stores.get_store, ops.stores.StoreRef("Shop")),
        "list_listings": await b.run(ops.listings.list_listings, ops.stores.StoreRef(onion)),
        "get_listing": await b.run(ops.listings.get_listing, ops.listings.ListingRef(onion, listing_id)),
    }


async def _every_operation(b: Backend, onion: str, name: str) -> dict[str, object]:
    """Runs each entry of the table once (on a store of its own, which it deletes at the end)."""
    r: dict[str, object] = {"get_tor": await b.run(ops.info.get_tor, ops.NoInput())}
    r["node_info"] = await b.run(ops.info.node_info, ops.NoInput())
    made = await b.run(ops.stores.create_store, ops.stores.NewStore({"name": name}))
    r["create_store"], other = made, made["onion"]
    r.update(await _reads(b, onion, (await b.run(ops.listings.list_listings, ops.stores.StoreRef(onion)))[0]["id"]))
    r["update_store"] = await b.run(ops.stores.update_store, ops.stores.StoreBody(other, {"description": "tea"}))
    r["update_access"] = await b.run(ops.stores.update_access, ops.stores.StoreBody(other, {"max_streams": 5}))
    client = await b.run(ops.stores.add_client, ops.stores.StoreBody(other, {"name": "friend"}))
    r["add_client"], r["get_client"] = (
        client,
        await b.run(ops.stores.get_client, ops.stores.ClientRef(other, client["id"])),
    )
    r["remove_client"] = await b.run(ops.stores.remove_client, ops.stores.ClientRef(other, client["id"]))
    image = await b.run(ops.listings.add_image, ops.listings.ImageUpload(other, _png()))
    new = {"title": "Cup", "price_sat": 1000, "kind": "digital", "images": [image["id"]]}
    added = await b.run(ops.listings.add_listings, ops.stores.StoreBody(other, new))
    assert isinstance(added, dict)  # one listing alone: the listing (a list for {"listings": [...]})
    r["add_image"], r["add_listings"], item = image, added, ops.listings.ListingRef(other, added["id"])
    r["update_listing"] = await b.run(
        ops.listings.update_listing, ops.listings.ListingBody(other, item.id, {**new, "title": "Mug"})
    )
    r["set_inventory"] = await b.run(ops.listings.set_inventory, ops.listings.ListingBody(other, item.id, {"": 3}))
    r["delete_listing"] = await b.run(ops.listings.delete_listing, item)
    r.update(await payment_operations(b, other))
    r["delete_store"] = await b.run(ops.stores.delete_store, ops.stores.StoreBody(other, {"confirm": other}))
    r.update(await _discovery_operations(b))
    r.update(await _purchase_operations(b))
    return r


async def _purchase_operations(b: Backend) -> dict[str, object]:
    """The buyer's side: the list answers; a store this node's directory does not hold, and actions on an unknown
    purchase, fail alike on both backends (full flows: tests/integration/test_purchases.py)."""
    p = ops.purchases
    r: dict[str, object] = {"purchases_list": await b.run(p.purchases_list, p.PurchaseQuery())}
    order = {"store": PEER, "listing": "x", "qty": 1, "moderator": PEER, "ship_to": "here"}
    calls: list[tuple[ops.Operation[Any, Any], object]] = [
        (p.purchases_show, p.PurchaseRef("0" * 16)),
        (p.purchases_place, p.NewPurchase(order)),
    ]
    bodies = {"statement": "x", "text": "x", "rating": 5}
    calls += [(op, p.PurchaseBody("0" * 16, bodies)) for op in p.OPERATIONS[3:]]
    for op, inp in calls:
        with pytest.raises(errors.PasarError) as exc:
            await b.run(op, inp)
        r[op.name] = {"error": type(exc.value).__name__, "code": exc.value.code}
    return r


PEER = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid"


async def _discovery_operations(b: Backend) -> dict[str, object]:
    """Peers, blocks, search and reports answer alike; crawling needs the running node's tor (both refuse)."""
    d = ops.discovery
    r: dict[str, object] = {"add_peer": await b.run(d.add_peer, d.Body({"onion": f"{PEER}.onion"}))}
    r["list_peers"] = await b.run(d.list_peers, ops.NoInput())
    r["ban_peer"] = await b.run(d.ban_peer, d.PeerRef(PEER))
    r["remove_peer"] = await b.run(d.remove_peer, d.PeerRef(PEER))
    r["add_block"] = await b.run(d.add_block, d.Body({"kind": "tag", "value": "spam", "reason": "junk"}))
    r["list_blocks"] = await b.run(d.list_blocks, ops.NoInput())
    r["remove_block"] = await b.run(d.remove_block, d.BlockRef("tag", "spam"))
    r["search"] = await b.run(d.search, d.SearchParams(q='tea "NEAR( -x*', limit="5"))
    r["list_reports"] = await b.run(d.list_reports, ops.NoInput())
    for op, inp in (
        (d.directory_store, d.StoreAddress(PEER)),
        (d.crawl, ops.NoInput()),
        (d.crawl_status, ops.NoInput()),
    ):
        with pytest.raises(errors.PasarError) as exc:
            await b.run(op, inp)
        r[op.name] = {"error": type(exc.value).__name__, "code": exc.value.code}
    return r


@pytest.fixture
def shop(tmp_path):
    node = make_node(tmp_path)
    onion = node.cli("store", "create", "Shop").stdout.strip().removesuffix(".onion")
    node.cli("listing", "add", "--store", "Shop", "--title", "Tea", "--price-sat", "500", "--kind", "digital")
    yield node, onion, cfg.load(node.data_dir, env={})
    node.stop()


async def test_each_operation_gives_the_same_json_on_the_data_dir_and_through_the_node(shop):
    node, onion, config = shop
    async with open_backend(config) as local:
        assert isinstance(local, LocalBackend)
        listing_id = (await local.run(ops.listings.list_listings, ops.stores.StoreRef(onion)))[0]["id"]
        before = await _reads(local, onion, listing_id)
        on_disk = await _every_operation(local, onion, "Offline extra")
    node.start()
    async with open_backend(config) as remote:
        assert isinstance(remote, RemoteBackend)
        assert _without_context(await _reads(remote, onion, listing_id)) == _without_context(before)
        through_api = await _every_operation(remote, onion, "Online extra")
        listed = await remote.run(ops.stores.list_stores, ops.NoInput())
        assert [(s["status"], s["state"]) for s in listed] == [("local", "local")]
    assert set(on_disk) == set(through_api) == set(ops.BY_NAME)  # every entry of the table ran both ways
    for name in ops.BY_NAME:
        if name != "get_tor":  # what tor is doing differs: no node runs tor in the first case
            assert _shape(on_disk[name]) == _shape(through_api[name]), name
    stores = before["list_stores"]
    assert isinstance(stores, list) and [(s["status"], s["state"]) for s in stores] == [("stopped", "stopped")]


async def _failures(b: Backend, onion: str) -> list[errors.PasarError]:
    calls = [
        (ops.stores.get_store, ops.stores.StoreRef("no such store")),
        (ops.listings.get_listing, ops.listings.ListingRef(onion, "nope")),
        (ops.stores.delete_store, ops.stores.StoreBody(onion, {"confirm": "Shop"})),
        (ops.listings.add_listings, ops.stores.StoreBody(onion, {"title": "", "price_sat": -1})),
        (ops.listings.set_inventory, ops.listings.ListingBody(onion, "nope", ["not", "a", "map"])),
        (ops.listings.add_image, ops.listings.ImageUpload(onion, b"not an image")),
    ]
    found = []
    for op, inp in calls:
        with pytest.raises(errors.PasarError) as exc:
            await b.run(op, inp)
        found.append(exc.value)
    return found


async def test_the_cli_raises_the_same_error_class_and_code_through_the_node(shop):
    node, onion, config = shop
    async with open_backend(config) as local:
        offline = await _failures(local, onion)
    node.start()
    async with open_backend(config) as remote:
        online = await _failures(remote, onion)
    for a, b in zip(offline, online, strict=True):
        assert (type(b), b.code, b.status) == (type(a), a.code, a.status)
        if isinstance(a, errors.ValidationError):
            assert isinstance(b, errors.ValidationError) and b.fields == a.fields
        else:
            assert b.message == a.message
    assert [type(e) for e in online[:3]] == [errors.NotFound, errors.NotFound, errors.ValidationError]


def test_the_cli_prints_the_same_error_through_the_node(shop):
    node, _onion, _config = shop
    offline = node.cli("listing", "remove", "--store", "Shop", "nope", check=False)
    node.start()
    online = node.cli("listing", "remove", "--store", "Shop", "nope", check=False)
    assert offline.returncode == online.returncode == 1
    assert offline.stderr == online.stderr == "pasar: error: no listing 'nope' in this store\n"


def test_node_answers_with_and_without_a_running_node(shop):
    node, _onion, _config = shop  # the node onion stays the same across runs (node.key)
    offline = json.loads(node.cli("node", "--json").stdout)
    stopped = {"mode": "embedded", "state": "stopped (the node is not running)"}
    onion = offline["onion"]
    assert len(onion) == 56 and onion != _onion  # the node onion has its own key, never a store's
    assert offline == {
        "version": __version__, "stores": 1, "listings": 1, "tor": stopped, "onion": onion, "node_status": "stopped",
        "gossip": True, "peers": 0, "announcements": 0, "directory_stores": 0, "listings_indexed": 0,
        "directory_onion": None,
    }  # fmt: skip
    assert node.cli("node").stdout == (
        f"pasar {__version__}: 1 store, 1 listing\ntor: embedded, stopped (the node is not running)\n"
        f"node onion: {onion}.onion (stopped); gossip on\n0 peers, 0 store announcements\n"
        "directory: 0 stores, 0 listings indexed\n"
    )
    node.start()
    online = json.loads(node.cli("node", "--json").stdout)
    no_tor = {"mode": "off", "state": "stores are served on loopback only (pasar run --no-tor)"}
    assert online == {**offline, "tor": no_tor, "node_status": "local"}  # served on loopback, not published
    request = urllib.request.Request(f"{node.admin_url}/api/v1/node", headers=node.auth)
    with urllib.request.urlopen(request, timeout=10) as resp:  # the API itself
        assert resp.status == 200 and json.loads(resp.read()) == online
