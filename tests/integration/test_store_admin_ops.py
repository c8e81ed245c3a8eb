"""Store names, deletion and ports through the API, the admin forms and the CLI (real processes)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import random
import socket
import subprocess
import sys
import time

import aiohttp
import pytest

from .conftest import cli_env, free_port
from .pages import check_html
from .test_admin import login


def free_run(length: int) -> int:
    """The first of ``length`` consecutive free loopback ports below the kernel's ephemeral range, where no
    other test's port-0 listener or outgoing connection lands meanwhile (tests run in parallel workers)."""
    for _ in range(200):
        first = random.randrange(20_000, 32_000)
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + length):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise AssertionError("no run of free loopback ports found")


def refused(url: str) -> bool:
    """True when nothing listens at ``url``'s port any more."""
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


async def wait_refused(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not refused(url):
        assert time.monotonic() < deadline, f"{url} still answers"
        await asyncio.sleep(0.05)


@pytest.fixture
async def api(running_node):
    async with aiohttp.ClientSession(running_node.admin_url, headers=running_node.auth) as s:
        yield s


@pytest.fixture
async def browser(running_node):
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(running_node.admin_url, cookie_jar=jar) as s:
        yield s


async def make(api: aiohttp.ClientSession, name: str) -> dict:
    async with api.post("/api/v1/stores", json={"name": name}) as r:
        assert r.status == 201, await r.text()
        return await r.json()


# -- 1. duplicate names ----------------------------------------------------------
async def test_api_refuses_a_duplicate_name_and_a_rename_onto_one(api):
    await make(api, "Corner Shop")
    other = await make(api, "Other")
    async with api.post("/api/v1/stores", json={"name": "CORNER  shop"}) as r:
        body = await r.json()
        assert r.status == 422 and "already named 'Corner Shop'" in body["fields"]["name"], body
    async with api.patch(f"/api/v1/stores/{other['onion']}", json={"name": "corner shop"}) as r:
        assert r.status == 422 and "already named" in (await r.json())["fields"]["name"]
    async with api.get("/api/v1/stores/corner%20shop") as r:  # still one store by that name
        assert r.status == 200 and (await r.json())["name"] == "Corner Shop"


async def test_admin_forms_refuse_duplicate_names(browser, api):
    csrf = await login(browser)
    first = await make(api, "Bakery")
    async with browser.post("/stores", data={"name": "bakery", "csrf": csrf}) as r:
        html = await r.text()
        assert r.status == 422 and "already named" in html
    second = await make(api, "Deli")
    data = {"csrf": csrf, "name": "BAKERY", "display_unit": "sat"}
    async with browser.post(f"/stores/{second['onion']}/profile", data=data) as r:
        assert r.status == 422 and "already named" in await r.text()
    async with api.get("/api/v1/stores") as r:
        assert sorted(s["name"] for s in await r.json()) == ["Bakery", "Deli"]
    assert first["onion"] != second["onion"]


def test_cli_refuses_a_duplicate_name_so_store_names_stay_usable(node_factory):
    node = node_factory()
    node.cli("store", "create", "Tea House")
    proc = node.cli("store", "create", "tea house", check=False)
    assert proc.returncode == 1 and "already named 'Tea House'" in proc.stderr and "Traceback" not in proc.stderr
    assert node.cli("listing", "list", "--store", "TEA HOUSE").returncode == 0


# -- 2. names that look like addresses ------------------------------------------
NAMES = ["Shop.", "Best.onion", "a/b?c#d", "100% wool"]


def test_names_ending_in_dot_or_onion_work_with_store_offline_and_through_the_node(node_factory):
    node = node_factory()
    made = {name: node.cli("store", "create", name, PASAR_STORE_PORT_BASE="0").stdout.strip() for name in NAMES}
    for name in NAMES:
        out = node.cli("listing", "add", "--store", name, "--title", "T", "--price-sat", "5", "--kind", "digital")
        assert out.returncode == 0, (name, out.stderr)
    node.start()
    for name, address in made.items():
        items = json.loads(node.cli("listing", "list", "--store", name, "--json").stdout)
        assert len(items) == 1, name
        proc = node.cli("store", "set-port", name, "auto")
        assert address in proc.stdout


# -- 3. deletion -------------------------------------------------------------------
async def test_api_delete_needs_the_address_then_unpublishes_and_stops_the_listener(api, running_node):
    keep = await make(api, "Keep")
    store = await make(api, "Doomed")
    onion, local = store["onion"], store["local_url"]
    async with aiohttp.ClientSession() as buyer, buyer.get(local + "/") as r:
        assert r.status == 200
    for body in (None, {}, {"confirm": "Doomed"}, {"confirm": keep["onion"]}):
        kwargs = {} if body is None else {"json": body}
        async with api.delete(f"/api/v1/stores/{onion}", **kwargs) as r:
            assert r.status == 422 and "confirm" in (await r.json())["fields"], body
    async with api.delete("/api/v1/stores/doomed", json={"confirm": f"{onion}.onion"}) as r:
        gone = await r.json()
        assert r.status == 200, gone
    moved = running_node.data_dir / "deleted" / gone["moved_to"].rsplit("/", 1)[1]
    assert gone["moved_to"] == str(moved) and moved.name.startswith(onion + "-")
    assert len((moved / "key").read_bytes()) == 32 and not (running_node.data_dir / "stores" / onion).exists()
    await wait_refused(local)
    async with api.get(f"/api/v1/stores/{onion}") as r:
        assert r.status == 404
    async with api.get("/api/v1/stores") as r:
        assert [s["onion"] for s in await r.json()] == [keep["onion"]]
    async with api.delete(f"/api/v1/stores/{onion}", json={"confirm": onion}) as r:
        assert r.status == 404
    await make(api, "Doomed")  # the name is free again


async def test_admin_delete_goes_through_a_confirmation_page(browser, api, running_node):
    csrf = await login(browser)
    store = await make(api, "Flea Market")
    onion = store["onion"]
    async with browser.get(f"/stores/{onion}") as r:
        assert f'href="/stores/{onion}/delete"' in await r.text()
    async with browser.get(f"/stores/{onion}/delete") as r:
        html = await r.text()
        assert r.status == 200
        check_html(html, "delete page", allow_loopback=True)
    for words in ("stops being published", f"{running_node.data_dir}/deleted/{onion}-", "restore", "key"):
        assert words in html, words
    assert 'name="confirm" value="' + onion in html and 'name="csrf"' in html
    async with browser.post(f"/stores/{onion}/delete", data={"confirm": onion}, allow_redirects=False) as r:
        assert r.status == 403  # no form token
    data = {"csrf": csrf, "confirm": onion}
    async with browser.post(f"/stores/{onion}/delete", data=data, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/?done=store-deleted"
    async with browser.get("/?done=store-deleted") as r:
        html = await r.text()
        assert "Store deleted" in html and "Flea Market" not in html
    await wait_refused(store["local_url"])
    assert len(list((running_node.data_dir / "deleted").iterdir())) == 1
    async with browser.get(f"/stores/{onion}/delete") as r:
        assert r.status == 404


def test_cli_delete_asks_or_needs_yes(node_factory):
    node = node_factory()
    address = node.cli("store", "create", "Gone Soon").stdout.strip()
    onion = address.removesuffix(".onion")
    proc = node.cli("store", "delete", "Gone Soon", check=False)  # stdin is not a terminal
    assert proc.returncode == 1 and "--yes" in proc.stderr
    assert answer_on_a_terminal(node.data_dir, ["store", "delete", "Gone Soon"], "no") != 0
    assert (node.data_dir / "stores" / onion).exists()
    assert answer_on_a_terminal(node.data_dir, ["store", "delete", "Gone Soon"], "yes") == 0
    assert not (node.data_dir / "stores" / onion).exists()
    (moved,) = (node.data_dir / "deleted").iterdir()
    assert (moved / "key").exists()


def test_cli_delete_with_yes_through_the_running_node(running_node):
    node = running_node
    address = node.cli("store", "create", "Live").stdout.strip()
    (store,) = json.loads(node.cli("store", "list", "--json").stdout)
    proc = node.cli("store", "delete", address[:12], "--yes")
    assert "deleted store 'Live'" in proc.stdout and "deleted/" in proc.stdout and "restore" in proc.stdout
    assert json.loads(node.cli("store", "list", "--json").stdout) == []
    assert refused(store["local_url"])


def answer_on_a_terminal(data_dir, args: list[str], answer: str) -> int:
    """Run ``pasar ARGS`` with a pseudo-terminal as stdin and type ``answer``."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node", *args],
            env=cli_env(data_dir),
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.write(leader, (answer + "\n").encode())
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    assert 'Type "yes"' in out, (out, err)
    return proc.returncode


# -- 4. ports ------------------------------------------------------------------------
async def test_api_moves_a_running_listener_to_a_new_port(api):
    store = await make(api, "Mover")
    onion, old = store["onion"], store["local_url"]
    port = free_port()
    async with api.patch(f"/api/v1/stores/{onion}", json={"port": port}) as r:
        detail = await r.json()
        assert r.status == 200 and detail["port"] == port and detail["local_url"] == f"http://127.0.0.1:{port}"
        assert detail["status"] == "local"
    await wait_refused(old)
    async with aiohttp.ClientSession() as buyer, buyer.get(detail["local_url"] + "/") as r:
        assert r.status == 200 and "Mover" in await r.text()
    other = await make(api, "Other")
    for bad, why in ((port, "another store"), (80, "1024"), ("soon", "auto"), (None, "auto")):
        async with api.patch(f"/api/v1/stores/{other['onion']}", json={"port": bad}) as r:
            body = await r.json()
            assert r.status == 422 and why in body["fields"]["port"], body


async def test_admin_port_form(browser, api, running_node):
    csrf = await login(browser)
    store = await make(api, "Porty")
    onion = store["onion"]
    async with browser.get(f"/stores/{onion}") as r:
        html = await r.text()
        assert 'name="port"' in html and f'action="/stores/{onion}/port"' in html
    bad = {"csrf": csrf, "port": str(running_node.admin_port)}
    async with browser.post(f"/stores/{onion}/port", data=bad) as r:
        html = await r.text()
        assert r.status == 422 and "admin listener" in html and "The profile was not saved" not in html
    port = free_port()
    async with browser.post(
        f"/stores/{onion}/port", data={"csrf": csrf, "port": str(port)}, allow_redirects=False
    ) as r:
        assert r.status == 303
    async with api.get(f"/api/v1/stores/{onion}") as r:
        assert (await r.json())["local_url"] == f"http://127.0.0.1:{port}"
    await wait_refused(store["local_url"])


def test_store_port_base_moves_only_new_stores_and_set_port_moves_old_ones(node_factory):
    node = node_factory()
    base = free_run(1)
    later = free_run(3)  # Late's port and the next ones, where "auto" moves Early
    node.cli("store", "create", "Early", "--store-port-base", str(base))
    node.cli("store", "create", "Late", "--store-port-base", str(later))
    ports = {s["name"]: s["port"] for s in json.loads(node.cli("store", "list", "--json").stdout)}
    assert ports == {"Early": base, "Late": later}
    proc = node.cli("store", "set-port", "Early", "auto", "--store-port-base", str(later))
    assert "next `pasar run`" in proc.stdout
    target = later + 1 if later + 1 != node.admin_port else later + 2
    assert f"port {target}" in proc.stdout
    proc = node.cli("store", "set-port", "Late", "99", check=False)
    assert proc.returncode == 1 and "1024" in proc.stderr
    node.start()
    urls = {s["name"]: s["local_url"] for s in json.loads(node.cli("store", "list", "--json").stdout)}
    assert urls == {"Early": f"http://127.0.0.1:{target}", "Late": f"http://127.0.0.1:{later}"}
