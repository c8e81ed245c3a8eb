"""The publisher's logic against a fake tor (pure logic; real tor is in the integration tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from node.core.errors import TorError
from node.core.models import OnionSpec
from node.core.ports import Tor
from node.hosting.publisher import Publisher


@dataclass
class FakeTor:
    embedded: bool = False
    version: str = "0.4.9.11"
    supports_pow: bool = True
    socks: tuple[str, int] | None = ("127.0.0.1", 9050)
    start_errors: list[Exception] = field(default_factory=list)
    remove_errors: list[Exception] = field(default_factory=list)
    rename: dict[str, str] = field(default_factory=dict)  # onion -> what "tor" computes instead
    onions: dict[str, OnionSpec] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    starts: int = 0
    callbacks: dict[str, Callable[..., None]] = field(default_factory=dict)

    async def start(
        self,
        *,
        on_lost: Callable[[], None],
        on_descriptor: Callable[[str, str, str], None],
        on_bootstrap: Callable[[int, str], None],
    ) -> None:
        self.starts += 1
        if self.start_errors:
            raise self.start_errors.pop(0)
        self.callbacks = {"on_lost": on_lost, "on_descriptor": on_descriptor, "on_bootstrap": on_bootstrap}
        self.onions.clear()

    async def stop(self) -> None:
        self.onions.clear()

    async def close(self) -> None:
        self.onions.clear()

    async def add_onion(self, spec: OnionSpec) -> str:
        name = self.rename.get(spec.key_blob, spec.key_blob)
        self.calls.append(f"add {name}")
        self.onions[name] = spec
        return name

    async def remove_onion(self, name: str) -> None:
        self.calls.append(f"remove {name}")
        if self.remove_errors:
            raise self.remove_errors.pop(0)
        self.onions.pop(name, None)

    def lose(self) -> None:
        self.callbacks["on_lost"]()

    def event(self, action: str, name: str) -> None:
        self.callbacks["on_descriptor"](action, name, "")


def spec(name: str, **options: Any) -> OnionSpec:
    return OnionSpec(key_blob=name, target="127.0.0.1:1", **options)  # the fake uses the blob as the name


async def started(tor: FakeTor, **kwargs: Any) -> Publisher:
    pub = Publisher(tor, status={}, backoff=(0.01, 0.02, 0.04), **kwargs)
    await pub.start()
    return pub


def test_the_fake_is_a_tor() -> None:
    tor: Tor = FakeTor()  # checked by mypy: the fake has everything the publisher uses
    assert not tor.embedded


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_an_unchanged_spec_is_not_republished():
    tor = FakeTor()
    pub = await started(tor)
    await pub.publish("a", spec("a"))
    await pub.publish("a", spec("a"))
    assert tor.calls == ["add a"]
    await pub.publish("a", spec("a", max_streams=5))
    assert tor.calls == ["add a", "remove a", "add a"] and tor.onions["a"].max_streams == 5


async def test_published_needs_an_upload_since_the_last_add():
    tor = FakeTor()
    pub = await started(tor)
    await pub.publish("a", spec("a"))
    tor.event("UPLOADED", "a")  # left over from an earlier instance
    assert str(pub.status["a"]) == "starting"
    tor.event("UPLOAD", "a")
    tor.event("UPLOADED", "a")
    assert str(pub.status["a"]) == "published"
    tor.event("UPLOADED", "someone-else")
    assert "someone-else" not in pub.status


async def test_a_failed_withdrawal_is_retried_not_forgotten():
    tor = FakeTor(remove_errors=[TorError("tor refused")])
    pub = await started(tor)
    await pub.publish("a", spec("a"))
    await pub.publish("a", spec("a", client_keys=("K",)))
    assert str(pub.status["a"]) == "error: tor refused" and "a" in tor.onions
    await pub.publish("a", spec("a", client_keys=("K",)))
    assert tor.calls[-2:] == ["remove a", "add a"] and tor.onions["a"].client_keys == ("K",)


async def test_a_wrong_address_is_withdrawn():
    tor = FakeTor(rename={"a": "b"})
    pub = await started(tor)
    await pub.publish("a", spec("a"))
    assert str(pub.status["a"]).startswith("error: tor computed b.onion") and tor.onions == {}


async def test_proof_of_work_on_an_old_tor_keeps_the_store_up():
    tor = FakeTor(supports_pow=False)
    pub = await started(tor)
    await pub.publish("a", spec("a"))
    await pub.publish("a", spec("a", pow=True))
    assert "0.4.9.2" in str(pub.status["a"]) and "still published" in str(pub.status["a"])
    assert tor.calls == ["add a"] and not tor.onions["a"].pow


async def test_reconnects_republish_and_apply_changes_made_while_down():
    tor = FakeTor()
    pub = await started(tor)
    await pub.publish("a", spec("a"))
    task = asyncio.create_task(pub.run())
    try:
        tor.start_errors = [TorError("tor is gone"), RuntimeError("a bug")]
        tor.lose()
        await until(lambda: str(pub.state.state).startswith("error"))
        await pub.publish("a", spec("a", max_streams=9))  # while tor is away
        await pub.publish("b", spec("b"))
        assert str(pub.status["b"]).startswith("error")
        await until(lambda: str(pub.state.state) == "connected")
        await until(lambda: set(tor.onions) == {"a", "b"})
        assert tor.onions["a"].max_streams == 9 and tor.starts == 4  # start, TorError, bug, ok
        assert pub.state.reconnects == 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_backoff_grows_while_tor_keeps_dying():
    tor = FakeTor()
    pub = await started(tor, stable_after=60)
    task = asyncio.create_task(pub.run())
    delays = []
    try:
        for _ in range(4):
            starts = tor.starts
            tor.lose()
            await until(lambda n=starts: tor.starts > n and str(pub.state.state) == "connected")
            delays.append(pub.state.retry_in)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert delays == [0.02, 0.04, 0.04, 0.04]


async def test_backoff_starts_over_after_a_stable_connection():
    tor = FakeTor()
    pub = await started(tor, stable_after=0.0)
    task = asyncio.create_task(pub.run())
    try:
        for _ in range(3):
            starts = tor.starts
            tor.lose()
            await until(lambda n=starts: tor.starts > n and str(pub.state.state) == "connected")
            assert pub.state.retry_in == 0.01
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_tor_state_reads_as_before_in_json():
    tor = FakeTor()
    pub = Publisher(tor, status={}, backoff=(0.01,))
    assert pub.state.as_json()["state"] == "starting"
    await pub.start()
    await pub.publish("a", spec("a"))
    task = asyncio.create_task(pub.run())
    try:
        assert pub.state.as_json()["state"] == "connected" and pub.state.as_json()["socks"] == "127.0.0.1:9050"
        tor.start_errors = [TorError("tor is gone")]
        tor.lose()
        await until(lambda: "tor is gone" in str(pub.state.state))
        assert pub.state.as_json()["state"] == "error: tor is gone (retrying in 0s)"
        assert str(pub.status["a"]) == "error: tor is gone (retrying in 0s)"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
