"""The tor adapter and publisher against a real tor with ``DisableNetwork 1``.

A tor that may not use the network still answers ADD_ONION, so these tests
check our key blobs, command syntax, error messages and reconnect logic
against tor itself without any network at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.adapters.tor import Tor, TorSettings, add_onion_command, find_binary
from node.adapters.torprocess import embedded_torrc
from node.core.config import Config
from node.core.crypto import ClientAuthKey, StoreKey
from node.core.errors import TorError
from node.core.models import OnionSpec, StoreStatus
from node.hosting.publisher import Publisher

from .conftest import free_port


def settings(
    data_dir: Path, *, tor_control: str = "", tor_socks: str = "", tor_password: str = "", tor_extra_torrc: str = ""
) -> TorSettings:
    """As the node builds them: from its Config (``data_dir / "tor"`` for the embedded tor)."""
    config = Config(
        data_dir=data_dir,
        tor_control=tor_control,
        tor_socks=tor_socks,
        tor_password=tor_password,
        tor_extra_torrc=tor_extra_torrc,
    )
    return TorSettings.from_config(config)


def offline_settings(tmp_path: Path) -> TorSettings:
    extra = tmp_path / "offline.torrc"
    extra.write_text("DisableNetwork 1\n")
    return settings(tmp_path, tor_socks=f"127.0.0.1:{free_port()}", tor_extra_torrc=str(extra))


def _ignore(*args: object) -> None:
    pass


async def start(tor: Tor) -> None:
    await tor.start(on_lost=_ignore, on_descriptor=_ignore, on_bootstrap=_ignore)


async def test_tor_computes_the_same_address_from_our_key(tmp_path):
    tor = Tor(offline_settings(tmp_path))
    await start(tor)
    try:
        keys = [StoreKey.generate() for _ in range(5)]
        for key in keys:
            assert await tor.add_onion(OnionSpec(key.add_onion_blob(), f"unix:{tmp_path}/s.sock")) == key.onion
        assert sorted(await tor.onions()) == sorted(k.onion for k in keys)
    finally:
        await tor.close()


async def test_every_option_is_accepted_by_tor(tmp_path):
    tor = Tor(offline_settings(tmp_path))
    await start(tor)
    try:
        key = StoreKey.generate()
        clients = tuple(ClientAuthKey.generate().public for _ in range(3))
        spec = OnionSpec(key.add_onion_blob(), "127.0.0.1:8421", client_keys=clients, max_streams=20, pow=True)
        assert await tor.add_onion(spec) == key.onion
        with pytest.raises(TorError, match="already publishes this onion"):
            await tor.add_onion(spec)
        await tor.remove_onion(key.onion)
        assert await tor.add_onion(spec) == key.onion  # a changed client list re-publishes like this
    finally:
        await tor.close()


def test_command_syntax():
    spec = OnionSpec("BLOB", "unix:/x.sock", client_keys=("A", "B"), max_streams=5, pow=True)
    assert add_onion_command(spec) == (
        "ADD_ONION ED25519-V3:BLOB Flags=DiscardPK,MaxStreamsCloseCircuit,V3Auth MaxStreams=5 "
        "PoWDefensesEnabled=1 Port=80,unix:/x.sock ClientAuthV3=A ClientAuthV3=B"
    )
    assert (
        add_onion_command(OnionSpec("BLOB", "127.0.0.1:1"))
        == "ADD_ONION ED25519-V3:BLOB Flags=DiscardPK Port=80,127.0.0.1:1"
    )


async def wait_for(predicate, timeout: float = 60.0) -> None:
    """Poll ``predicate``; only a failure waits the whole (generous: a loaded 2-core machine) deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met within {timeout:.0f}s"
        await asyncio.sleep(0.05)


async def test_publisher_republishes_after_tor_dies(tmp_path):
    settings = offline_settings(tmp_path)
    tor = Tor(settings)
    status: dict[str, StoreStatus] = {}
    publisher = Publisher(tor, status=status, backoff=(0.2,))
    keys = [StoreKey.generate() for _ in range(2)]
    for key in keys:
        await publisher.publish(key.onion, OnionSpec(key.add_onion_blob(), f"unix:{tmp_path}/{key.onion[:8]}.sock"))
    await publisher.start()
    task = asyncio.create_task(publisher.run())
    try:
        assert sorted(await tor.onions()) == sorted(k.onion for k in keys)
        assert {str(s) for s in status.values()} == {"starting"}  # no network: no descriptor upload
        first_pid = int((settings.data_dir / "tor.pid").read_text())
        os.kill(first_pid, signal.SIGKILL)
        await wait_for(lambda: publisher.state.reconnects >= 1 and str(publisher.state.state) == "connected")
        assert int((settings.data_dir / "tor.pid").read_text()) != first_pid
        assert sorted(await tor.onions()) == sorted(k.onion for k in keys)
        assert {str(s) for s in status.values()} == {"starting"}
        await publisher.publish(keys[0].onion, None)
        assert await tor.onions() == [keys[1].onion] and keys[0].onion not in status
        second_pid = int((settings.data_dir / "tor.pid").read_text())
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await tor.close()
    assert not Path(f"/proc/{second_pid}").exists()  # stopped and reaped


async def test_a_replaced_onion_is_added_in_a_later_second_than_its_last_upload(tmp_path, monkeypatch):
    # tor's descriptor revision counter counts whole seconds, and every HSDir refuses a revision that is not
    # above the one it holds: options changed twice within a second left buyers the descriptor of a gone onion.
    tor = Tor(offline_settings(tmp_path))
    publisher = Publisher(tor, status={})
    key = StoreKey.generate()
    options = OnionSpec(key.add_onion_blob(), f"unix:{tmp_path}/s.sock")
    await publisher.publish(key.onion, options)
    await publisher.start()
    added: list[float] = []
    add_onion = tor.add_onion

    async def recording_add(spec: OnionSpec) -> str:
        added.append(time.time())
        return await add_onion(spec)

    monkeypatch.setattr(tor, "add_onion", recording_add)
    try:
        while time.time() % 1 > 0.5:  # early in a second, so an immediate replacement would share it
            await asyncio.sleep(0.01)
        publisher._on_descriptor("UPLOAD", key.onion, "")  # as tor reports the upload
        uploaded = time.time()
        await publisher.publish(key.onion, OnionSpec(key.add_onion_blob(), f"unix:{tmp_path}/s.sock", max_streams=5))
        assert await tor.onions() == [key.onion]
        assert len(added) == 1 and int(added[0]) > int(uploaded)
    finally:
        await tor.close()


async def test_a_broken_extra_torrc_is_reported(tmp_path):
    extra = tmp_path / "bad.torrc"
    extra.write_text("NoSuchTorOption 1\n")
    tor = Tor(settings(tmp_path, tor_extra_torrc=str(extra)))
    with pytest.raises(TorError, match="NoSuchTorOption"):
        await start(tor)
    await tor.close()


def test_embedded_torrc_stays_on_loopback(tmp_path):
    text = embedded_torrc(settings(tmp_path))
    assert "ControlPort 127.0.0.1:auto" in text and "SocksPort 127.0.0.1:auto" in text
    assert "CookieAuthentication 1" in text and "%include" not in text


# -- attaching to a system tor -------------------------------------------------
def _scratch_tor(tmp_path: Path, auth_lines: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    data = tmp_path / "scratch"
    data.mkdir(mode=0o700)
    port = free_port()
    torrc = tmp_path / "scratch.torrc"
    torrc.write_text(
        "\n".join([f"DataDirectory {data}", "DisableNetwork 1", "SocksPort 0", f"ControlPort 127.0.0.1:{port}"])
        + "\n"
        + "\n".join(auth_lines)
        + "\n"
    )
    empty = tmp_path / "empty"
    empty.write_text("")
    proc = subprocess.Popen(
        [find_binary("tor"), "-f", str(torrc), "--defaults-torrc", str(empty)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while b"Opened Control listener" not in _log(data):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"scratch tor did not open its control port: {_log(data)[-2000:]!r}")
        time.sleep(0.05)
    return proc, port


def _log(data: Path) -> bytes:
    path = data / "notice.log"
    return path.read_bytes() if path.exists() else b""


@pytest.fixture
def password_tor(tmp_path):
    hashed = subprocess.run(
        [find_binary("tor"), "--quiet", "--hash-password", "open sesame"], capture_output=True, text=True, check=True
    ).stdout.strip()
    proc, port = _scratch_tor(
        tmp_path, [f"HashedControlPassword {hashed}", f"Log notice file {tmp_path}/scratch/notice.log"]
    )
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.parametrize(
    ("password", "message"),
    [("", "wants a password: set tor_password"), ("wrong", "rejected tor_password"), ("open sesame", None)],
)
async def test_system_tor_password(tmp_path, password_tor, password, message):
    tor = Tor(settings(tmp_path / "t", tor_control=f"127.0.0.1:{password_tor}", tor_password=password))
    try:
        if message:
            with pytest.raises(TorError, match=message):
                await start(tor)
        else:
            await start(tor)
            assert tor.version.startswith("0.4.")
    finally:
        await tor.close()


async def test_a_control_port_without_authentication_is_refused(tmp_path):
    proc, port = _scratch_tor(tmp_path, [f"Log notice file {tmp_path}/scratch/notice.log"])
    tor = Tor(settings(tmp_path / "t", tor_control=f"127.0.0.1:{port}"))
    try:
        with pytest.raises(TorError, match="CookieAuthentication 1"):
            await start(tor)
    finally:
        await tor.close()
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def loopback_server(handler: Any) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 that is not tor; yields its port."""
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await handler(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def _hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _say_nothing(writer: asyncio.StreamWriter) -> None:
    pass


@pytest.mark.parametrize(
    ("handler", "message"),
    [(_hang_up, "is not a tor control port"), (_say_nothing, "did not answer like a tor control port")],
)
async def test_a_port_that_is_not_a_control_port(tmp_path, monkeypatch, handler, message):
    monkeypatch.setattr("node.adapters.tor.PROBE_TIMEOUT", 0.5)
    async with loopback_server(handler) as port:
        tor = Tor(settings(tmp_path / "t", tor_control=f"127.0.0.1:{port}"))
        try:
            with pytest.raises(TorError, match=message):
                await start(tor)
        finally:
            await tor.close()
