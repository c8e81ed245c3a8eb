"""The start-up re-watch against a real regtest bitcoind: what it imports, and that it waits for Core's rescan.

Core's rescan of a regtest chain lasts milliseconds, so ``Rescanning`` (a real ``BitcoinCore``) makes Core's
watch-only wallet look as it does during a long mainnet rescan: ``getwalletinfo`` answers "scanning", other
imports are refused as Core refuses them then, and the re-watch's own import reaches Core but its answer is
lost as a client timeout loses it. Everything else is Core's real answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from node.adapters.bitcoin import BitcoinCore, BitcoinSettings
from node.adapters.bitcoin_codec import RPC_WALLET_ERROR, RpcError
from node.adapters.moderation_schema import MIGRATIONS as MODERATION_MIGRATIONS
from node.adapters.sqlite import SQLiteDatabase
from node.app import payments as payments_app
from node.core import backupfile
from node.core.crypto import StoreKey
from node.core.errors import WalletError
from node.operations import recovery
from node.payments import rewatch, watcher
from node.payments.models import OrderState
from node.payments.moderation import ModeratorService
from node.payments.moderation_store import Case, CaseState, ModerationStore
from tests.conftest import watch_name
from tests.integration.escrow_world import AMOUNT, World, funded
from tests.integration.test_recovery_regtest import BLOCKS, PASSPHRASE
from tests.regtest import Regtest, RegtestError

DEADLINE = 30.0
DAY = 86400


class Rescanning(BitcoinCore):
    """Core's watch-only wallet "rescans" while ``scanning`` is true (see the module docstring)."""

    def __init__(self, settings: BitcoinSettings, watch_wallet: str) -> None:
        super().__init__(settings, watch_wallet)
        self.scanning = False
        self.lose_next_import = False  # the next import reaches Core, then "times out" while Core rescans
        self.refused = 0

    async def _wallet_rpc(self, wallet: str, method: str, *params: Any, timeout: float | None = None) -> Any:
        if wallet == self.watch_wallet and self.scanning and method == "importdescriptors":
            self.refused += 1
            raise RpcError("busy", RPC_WALLET_ERROR, "Wallet is currently rescanning. Abort existing rescan or wait.")
        answer = await super()._wallet_rpc(wallet, method, *params, timeout=timeout)
        if wallet == self.watch_wallet and method == "getwalletinfo" and self.scanning:
            return {**answer, "scanning": {"duration": 3, "progress": 0.25}}
        if method == "importdescriptors" and self.lose_next_import:
            self.lose_next_import, self.scanning = False, True
            raise WalletError("Bitcoin Core did not answer importdescriptors (timed out): is bitcoind running?")
        return answer


@pytest.fixture
async def rescanning(regtest: Regtest) -> AsyncIterator[Rescanning]:
    """A new watch-only wallet (a restored node's): it holds no escrow yet."""
    values = regtest.config_overrides("vendor")
    core = Rescanning(BitcoinSettings.from_values(values), watch_name("vendor"))
    await core.ensure_wallets()
    yield core
    core.close()
    try:
        regtest.cli("unloadwallet", core.watch_wallet, False)
    except RegtestError:
        pass


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(DEADLINE):
        while not check():
            await asyncio.sleep(0.01)


def bare(descriptor: str) -> str:
    return descriptor.split("#", 1)[0].replace("'", "h")


def held(w: World, core: BitcoinCore) -> set[str]:
    return {bare(d["desc"]) for d in w.regtest.cli("listdescriptors", wallet=core.watch_wallet)["descriptors"]}


# -- F1: the gate opens when Core's rescan is over ---------------------------------------------------
async def test_the_watchers_wait_for_cores_rescan_and_checkouts_still_watch(
    world: World, rescanning: Rescanning, caplog: pytest.LogCaptureFixture
) -> None:
    w, p, core = world, world.payments(), rescanning
    order, _ = await funded(w, p)
    restored = w.payments(bitcoin=core)
    caplog.set_level(logging.INFO, logger="node.payments.rewatch")
    core.lose_next_import = True
    vendor_side = [lambda: payments_app.vendor_escrows(restored.store, restored.ctx.now)]
    gate = asyncio.create_task(rewatch.rewatch_until_done(core, vendor_side, first=0.001, cap=0.005))
    try:
        await until(lambda: core.scanning and core.calls["getwalletinfo"] >= 20)
        assert not gate.done()  # Core lists the descriptor already, but has not found its coins yet
        assert bare(order.escrow.descriptor) in held(w, core)
        later, _ = await p.checkout(w.store_onion, w.form())  # a checkout while Core rescans (its escrow)
        async with asyncio.timeout(5):  # not held behind the rescan: deferred until it is over
            await core.watch(later.escrow.descriptor)
        assert bare(later.escrow.descriptor) not in held(w, core) and core.refused == 0
        core.scanning = False
        async with asyncio.timeout(DEADLINE):
            assert await gate == [order.escrow.descriptor]
    finally:
        gate.cancel()
    assert bare(later.escrow.descriptor) in held(w, core)  # imported before the watchers start
    told = [r for r in caplog.records if "is rescanning" in r.getMessage()]
    assert len(told) == 1, [r.getMessage() for r in caplog.records]  # bounded: not one line per look
    await restored.watch_once()
    seen = await restored.order(order.id)
    assert seen.state is OrderState.ACCEPTED and seen.funding.paid_sat == AMOUNT, seen.history


async def test_a_restart_during_the_rescan_waits_for_it_too(world: World, rescanning: Rescanning) -> None:
    """The descriptors are in the wallet already (imported before the restart): the pass imports nothing but
    still waits until Core's rescan is over."""
    w, p, core = world, world.payments(), rescanning
    order, _ = await funded(w, p)
    since = order.created_at
    assert await core.rewatch([(order.escrow.descriptor, since)]) == [order.escrow.descriptor]
    core.scanning = True  # the node restarts while Core still rescans for them

    async def source() -> list[rewatch.Watched]:
        return [rewatch.Watched(order.escrow.descriptor, since)]

    gate = asyncio.create_task(rewatch.rewatch_until_done(core, [source], first=0.001, cap=0.005))
    try:
        await until(lambda: core.calls["getwalletinfo"] >= 10)
        assert not gate.done()
        core.scanning = False
        async with asyncio.timeout(DEADLINE):
            assert await gate == []
    finally:
        gate.cancel()


# -- F2: exactly what the watchers read ----------------------------------------------------------------
async def test_the_re_watch_takes_exactly_the_orders_the_watcher_reads(world: World) -> None:
    w, p = world, world.payments()
    now = int(time.time())
    placed = [(await p.checkout(w.store_onion, w.form()))[0] for _ in range(3)]
    kept_open, late, old = placed
    for order, pay_by in ((late, now - DAY), (old, now - watcher.LATE_WINDOW - DAY)):
        stored = await p.order(order.id)
        await p.store.update(dataclasses.replace(stored, state=OrderState.EXPIRED, pay_by=pay_by), expect=stored)
    read = {o.id for o in await watcher.watched_orders(p.store, now)}
    assert read == {kept_open.id, late.id}  # an expiry 31 days ago is no longer watched
    found = await payments_app.vendor_escrows(p.store, lambda: now)
    assert {x.descriptor for x in found} == {kept_open.escrow.descriptor, late.escrow.descriptor}


async def test_batches_go_newest_first() -> None:
    asked: list[list[tuple[str, int]]] = []

    class Core:
        async def rewatch(self, escrows: list[tuple[str, int]]) -> list[str]:
            asked.append(list(escrows))
            return [d for d, _ in escrows]

        async def rescan_progress(self) -> float | None:
            return None

    async def source() -> list[rewatch.Watched]:
        return [rewatch.Watched(f"wsh({i})#x", 1000 + i) for i in range(rewatch.BATCH + 5)]

    done = await rewatch.rewatch_once(Core(), [source])  # a pure-logic double
    assert len(done) == rewatch.BATCH + 5 and [len(a) for a in asked] == [rewatch.BATCH, 5]
    assert asked[0][0] == (f"wsh({rewatch.BATCH + 4})#x", 1000 + rewatch.BATCH + 4)  # the newest first
    assert asked[1][-1] == ("wsh(0)#x", 1000)  # the oldest last, alone with the old ones


# -- F3: every case not decided, however many ----------------------------------------------------------
async def test_every_active_case_is_read_with_no_cap(world: World, tmp_path: Path) -> None:
    w, p = world, world.payments()
    await p.checkout(w.store_onion, w.form())
    (model,) = await w.moderator.cases()
    db = SQLiteDatabase(tmp_path / "many.sqlite", MODERATION_MIGRATIONS)
    await db.open()
    try:
        store = ModerationStore(db)

        def case(n: int, state: CaseState, at: int) -> Case:
            return dataclasses.replace(model, id=f"c{n:04d}", order_id=f"o{n:04d}", state=state, created_at=at)

        active = [case(1, CaseState.OPEN, 1000), case(2, CaseState.REFUND_SIGNED, 1001)]
        active.append(case(3, CaseState.DISPUTED, 1001))
        for c in active:
            await store.insert_case(dataclasses.replace(c, updated_at=1000))
        for n in range(10, 511):  # more than 500 decided cases, all updated after the open ones
            await store.insert_case(dataclasses.replace(case(n, CaseState.DECIDED, 2000 + n), updated_at=3000 + n))
        assert [c.id for c in await store.active_cases(page=2)] == ["c0003", "c0002", "c0001"]  # newest first
        service = ModeratorService(db, None, StoreKey.generate())
        sheet = await recovery.moderator_escrows(SimpleNamespace(moderation=service))
        assert sorted(e.order_id for e in sheet) == ["o0001", "o0002", "o0003"]
        watched = await payments_app.moderator_escrows(service)
        assert len(watched) == 3 and {x.since for x in watched} == {1000, 1001}
    finally:
        await db.close()


# -- F10: refresh goes on while the escrow rounds wait -------------------------------------------------
async def test_refresh_runs_before_the_gate_opens_the_escrow_rounds() -> None:
    calls: list[str] = []
    gate = asyncio.Event()

    class Payments:
        settings = SimpleNamespace(poll_interval=0.001)

        async def refresh(self) -> None:
            calls.append("refresh")
            if calls.count("refresh") == 2:
                raise WalletError("Bitcoin Core did not answer getblockchaininfo: is bitcoind running?")

        async def run(self) -> None:
            calls.append("run")

    loop = asyncio.create_task(payments_app.payments_loop(Payments(), gate))
    await until(lambda: calls.count("refresh") >= 3)
    assert "run" not in calls and not loop.done()
    gate.set()
    async with asyncio.timeout(DEADLINE):
        await loop
    assert calls[-1] == "run"


# -- F7: docs/recovery.md's decrypt block streams, and refuses a cut or padded file ---------------------
class Zeros(io.RawIOBase):
    """``size`` zero bytes, made as they are read (a large store image in the backup)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def sealed_backup(path: Path, sheet: bytes, big: int) -> None:
    """A backup file (Pasar's own ``Encryptor``) holding a ``big``-byte member, then ``recovery.json``."""
    with path.open("wb") as dst:
        sealer = backupfile.Encryptor(dst, PASSPHRASE, backupfile.WEAKEST)
        with tarfile.open(fileobj=sealer, mode="w|") as tar:
            image = tarfile.TarInfo("store/images/big.bin")
            image.size = big
            tar.addfile(image, Zeros(big))
            info = tarfile.TarInfo("recovery.json")
            info.size = len(sheet)
            tar.addfile(info, io.BytesIO(sheet))
        sealer.close()


def decrypt(
    tmp_path: Path, backup: Path, *, limit_kib: int = 0, passphrase: str = PASSPHRASE
) -> subprocess.CompletedProcess[str]:
    """The page's decrypt block, as written, in bash (with an address-space limit when ``limit_kib``)."""
    script = (f"ulimit -v {limit_kib}\n" if limit_kib else "") + BLOCKS["decrypt"]
    python = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{python}:{os.environ['PATH']}", "BACKUP": str(backup), "PASSPHRASE": passphrase}
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_the_pages_decrypt_streams_a_large_backup(tmp_path: Path) -> None:
    sheet = b'{"format": "pasar-recovery"}\n'
    backup = tmp_path / "big.pasarbak"
    await asyncio.to_thread(sealed_backup, backup, sheet, 128 * 1024 * 1024)
    done = await asyncio.to_thread(decrypt, tmp_path, backup, limit_kib=200 * 1024)  # less than 2 x the file
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "recovery.json").read_bytes() == sheet


async def test_the_pages_decrypt_refuses_a_short_cut_or_padded_file(tmp_path: Path) -> None:
    sheet = b'{"format": "pasar-recovery"}\n'
    backup = tmp_path / "small.pasarbak"
    await asyncio.to_thread(sealed_backup, backup, sheet, 200_000)
    whole = backup.read_bytes()
    cases = {
        "or the backup file is damaged": whole + b"\0",  # read with the final chunk: it fails to authenticate
        "the backup file is truncated": whole[: backupfile.HEADER_BYTES + 65536 + 17],  # the final chunk cut off
        "not a Pasar backup, or cut short": whole[:60],
    }
    for message, raw in cases.items():
        backup.write_bytes(raw)
        done = await asyncio.to_thread(decrypt, tmp_path, backup)
        assert done.returncode != 0 and message in done.stderr, (message, done.stderr)
    backup.write_bytes(whole)
    done = await asyncio.to_thread(decrypt, tmp_path, backup, passphrase="not it")
    assert done.returncode != 0 and "wrong passphrase" in done.stderr, done.stderr
    with backup.open("wb") as dst:  # a final chunk of a full 65,536 bytes, then one byte more
        sealer = backupfile.Encryptor(dst, PASSPHRASE, backupfile.WEAKEST)
        sealer.write(bytes(2 * 65536))
        sealer.close()
        dst.write(b"\0")
    done = await asyncio.to_thread(decrypt, tmp_path, backup)
    assert done.returncode != 0 and "bytes after its end" in done.stderr, done.stderr
