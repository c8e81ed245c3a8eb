"""The app's one store observer (``StoreEvents``): what a new, deleted or moved store does to its
listener and its onion, with tor replaced by a fake (publisher logic is real)."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from aiohttp import web

from node.adapters import dbfiles
from node.adapters.net import TorHttp
from node.app import StoreEvents, create_app
from node.core import config as cfg
from node.core.errors import ValidationError
from node.core.events import StoreChange, StoreChanged
from node.core.models import OnionSpec, StoreRecord
from node.market.market import Market
from node.web import appkeys

from .test_publish import FakeTor


@dataclass
class AppTor(FakeTor):
    """Answers ADD_ONION with the store's real address (looked up from the market's keys)."""

    market: Market | None = None
    targets: dict[str, str] = field(default_factory=dict)

    async def add_onion(self, spec: OnionSpec) -> str:
        assert self.market is not None
        name = next(o for o, k in self.market._keys.items() if k.add_onion_blob() == spec.key_blob)
        self.calls.append(f"add {name}")
        self.onions[name] = spec
        self.targets[name] = spec.target
        return name


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[web.Application, AppTor]]:
    dbfiles.initialise(tmp_path)
    (tmp_path / "admin.token").write_text(secrets.token_urlsafe(32))
    # gossip off: no node onion, so tor holds exactly the stores' onions (the node onion: test_discovery_app)
    config = cfg.load(tmp_path, flags={"store_port_base": "0", "gossip": "false"}, env={})
    tor = AppTor()
    app = create_app(config, tor=tor)
    runner = web.AppRunner(app)
    await runner.setup()  # enters the cleanup contexts: storage, market, listeners, tor
    try:
        yield app, tor
    finally:
        await runner.cleanup()


async def test_deleting_a_store_withdraws_its_onion_and_stops_its_listener(node):
    app, tor = node
    market = app[appkeys.MARKET]
    tor.market = market
    keep = (await market.create_store({"name": "Keep"}))["onion"]
    onion = (await market.create_store({"name": "Gone"}))["onion"]
    assert set(tor.onions) == {keep, onion} and onion in app[appkeys.LISTENERS]
    await market.delete_store(onion, onion)
    assert f"remove {onion}" in tor.calls and set(tor.onions) == {keep}
    assert (
        onion not in app[appkeys.LISTENERS] and onion not in app[appkeys.TARGETS] and onion not in app[appkeys.STATUS]
    )
    assert onion not in app[appkeys.PUBLISHER].wanted and keep in app[appkeys.LISTENERS]


async def test_a_new_port_moves_the_listener_and_republishes_the_onion(node):
    app, tor = node
    market = app[appkeys.MARKET]
    tor.market = market
    onion = (await market.create_store({"name": "Mover"}))["onion"]
    before = app[appkeys.LISTENERS][onion]
    assert tor.targets[onion] == before.removeprefix("http://")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await market.set_port(onion, port)
    assert app[appkeys.LISTENERS][onion] == f"http://127.0.0.1:{port}"
    assert tor.targets[onion] == f"127.0.0.1:{port}" and tor.calls[-2:] == [f"remove {onion}", f"add {onion}"]


async def test_a_port_another_program_holds_is_refused_and_the_store_stays_up(node):
    app, tor = node
    market = app[appkeys.MARKET]
    tor.market = market
    onion = (await market.create_store({"name": "Blocked"}))["onion"]
    before = (app[appkeys.LISTENERS][onion], (await market.store(onion))["port"], dict(tor.onions))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ValidationError) as caught:
            await market.set_port(onion, port)
        assert "in use by another program" in caught.value.fields["port"]
        with pytest.raises(ValidationError):  # with a profile change, nothing of it is saved either
            await market.update_store(onion, {"name": "Renamed", "port": port})
    assert (app[appkeys.LISTENERS][onion], (await market.store(onion))["port"], dict(tor.onions)) == before
    assert (await market.store(onion))["profile"]["name"] == "Blocked"


async def test_a_port_taken_between_check_and_bind_says_so_and_unpublishes(node):
    app, tor = node
    market = app[appkeys.MARKET]
    tor.market = market
    market._port_free = None  # the race: another program binds the port right after the check
    onion = (await market.create_store({"name": "Raced"}))["onion"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        await market.set_port(onion, taken.getsockname()[1])
    assert str(app[appkeys.STATUS][onion]).startswith("error: cannot listen on port")
    assert onion not in tor.onions and onion not in app[appkeys.LISTENERS]


async def test_the_onion_is_withdrawn_while_its_listener_still_runs(node, monkeypatch):
    app, tor = node
    market = app[appkeys.MARKET]
    tor.market = market
    onion = (await market.create_store({"name": "Ordered"}))["onion"]
    listening_at_removal: list[bool] = []
    remove = tor.remove_onion

    async def recording_remove(name: str) -> None:
        listening_at_removal.append(name in app[appkeys.LISTENERS])
        await remove(name)

    monkeypatch.setattr(tor, "remove_onion", recording_remove)
    await market.delete_store(onion, onion)
    assert listening_at_removal == [True] and onion not in app[appkeys.LISTENERS]


async def test_a_profile_change_leaves_listener_and_onion_alone(node):
    app, tor = node
    market = app[appkeys.MARKET]
    tor.market = market
    onion = (await market.create_store({"name": "Quiet"}))["onion"]
    calls, listener = list(tor.calls), app[appkeys.LISTENERS][onion]
    await market.update_profile(onion, {"name": "Quieter"})
    assert tor.calls == calls and app[appkeys.LISTENERS][onion] == listener


async def test_outbound_http_goes_through_wherever_tor_has_its_socks_port(node):
    app, tor = node
    http = app[appkeys.HTTP]
    assert isinstance(http, TorHttp) and http.endpoint() == ("127.0.0.1", 9050)
    tor.socks = ("127.0.0.1", 9150)  # a reconnected embedded tor
    assert http.endpoint() == ("127.0.0.1", 9150)


async def test_a_publisher_loop_that_crashes_is_restarted(node, caplog, monkeypatch):
    app, tor = node
    publisher, stop = app[appkeys.PUBLISHER], tor.stop

    async def broken_stop() -> None:  # raised outside the loop's own error handling
        monkeypatch.setattr(tor, "stop", stop)
        raise RuntimeError("a bug in stop")

    monkeypatch.setattr(tor, "stop", broken_stop)
    tor.lose()
    async with asyncio.timeout(10):
        while str(publisher.state.state) != "connected" or publisher.state.reconnects == 0:
            await asyncio.sleep(0.01)
    assert "the tor publisher failed" in caplog.text and "a bug in stop" in caplog.text


async def test_without_tor_stores_are_served_on_loopback_only(tmp_path: Path):
    dbfiles.initialise(tmp_path)
    (tmp_path / "admin.token").write_text(secrets.token_urlsafe(32))
    app = create_app(cfg.load(tmp_path, flags={"store_port_base": "0"}, env={}))
    events = StoreEvents(app)
    record = cast(StoreRecord, {"onion": "x" * 56, "port": None})
    await events(StoreChanged(StoreChange.CREATED, record))  # before any context started: skipped
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        onion = (await app[appkeys.MARKET].create_store({"name": "Local"}))["onion"]
        assert str(app[appkeys.STATUS][onion]) == "local" and onion in app[appkeys.LISTENERS]
        assert appkeys.PUBLISHER not in app and appkeys.HTTP not in app
    finally:
        await runner.cleanup()


async def test_store_events_after_shutdown_began_start_and_publish_nothing(tmp_path: Path):
    """Teardown takes the listeners and tor out of the events first: nothing is started that nobody stops."""
    dbfiles.initialise(tmp_path)
    (tmp_path / "admin.token").write_text(secrets.token_urlsafe(32))
    tor = AppTor()
    app = create_app(cfg.load(tmp_path, flags={"store_port_base": "0", "gossip": "false"}, env={}), tor=tor)
    runner = web.AppRunner(app)
    await runner.setup()
    tor.market = app[appkeys.MARKET]
    record = await app[appkeys.MARKET].create_store({"name": "Late"})
    assert app[appkeys.RUNNING] == {"listeners", "tor", "discovery"}
    await runner.cleanup()
    assert app[appkeys.RUNNING] == set() and app[appkeys.LISTENERS] == {}
    calls = list(tor.calls)
    await StoreEvents(app)(StoreChanged(StoreChange.PORT_CHANGED, record))
    assert app[appkeys.LISTENERS] == {} and app[appkeys.RUNNERS] == {} and tor.calls == calls
