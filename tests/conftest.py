"""Fixtures shared by every test package: a real regtest bitcoind (tests/regtest.py).

- ``bitcoind`` (session): one ``Regtest`` with descriptor wallets "miner", "buyer", "vendor" and
  "moderator"; 101+ blocks mined to "miner"; "buyer" holds 20 confirmed coins of 1 BTC. Without a
  bitcoind the tests that use it are skipped, except under ``CI`` where that is a failure.
- ``regtest`` (function): the same object, started again if an earlier test stopped it.
- ``postgres`` (session): a throwaway PostgreSQL (tests/pg.py) on a unix socket in a temp dir.
- ``vendor_core`` / ``moderator_core`` (function, async): a ``BitcoinCore`` adapter signing with the
  "vendor" / "moderator" wallet and watching in a fresh watch-only wallet of its own (wallets ready).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from node.adapters.bitcoin import BitcoinCore
from tests.pg import ThrowawayPostgres, find_pg_bin
from tests.regtest import COIN, Regtest, RegtestError, btc, find_bitcoind

PARTY_WALLETS = ("miner", "buyer", "vendor", "moderator")
BUYER_COINS = 20


@pytest.fixture(scope="session")
def bitcoind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Regtest]:
    if find_bitcoind() is None:
        reason = "no bitcoind: run deploy/build-bitcoind.sh (once, ~15 min) or set PASAR_BITCOIND"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    node = Regtest(tmp_path_factory.mktemp("bitcoind"))
    try:
        node.start()
        for name in PARTY_WALLETS:
            node.create_wallet(name)
        node.mine(101, to_wallet="miner")
        coins = {node.address("buyer"): btc(COIN) for _ in range(BUYER_COINS)}
        node.cli("sendmany", "", coins, wallet="miner")
        node.mine(1, to_wallet="miner")
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    """A throwaway PostgreSQL (tests/pg.py) for the directory's PostgreSQL backend; skipped without one,
    except under ``CI`` where that is a failure."""
    if find_pg_bin() is None:
        reason = "no PostgreSQL: run deploy/install.sh --test (Debian's postgresql) or set PASAR_PG_BIN"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = ThrowawayPostgres()
    try:
        server.start()  # cleans up after itself if it fails; stop() is then a no-op
        yield server
    finally:
        server.stop()


@pytest.fixture
def regtest(bitcoind: Regtest) -> Regtest:
    bitcoind.start()  # no-op when running; a test that stopped it leaves it stopped
    return bitcoind


def watch_name(party: str) -> str:
    return f"pasar-watch-{party}-{uuid.uuid4().hex[:8]}"


async def _core(node: Regtest, wallet: str) -> AsyncIterator[BitcoinCore]:
    core = node.adapter(wallet, watch_name(wallet))
    await core.ensure_wallets()
    yield core
    try:  # keep Core light: each test's watch-only wallet is unloaded (its files stay in the datadir)
        node.cli("unloadwallet", core.watch_wallet, False)
    except RegtestError:
        pass  # bitcoind stopped by the test, or the wallet unloaded already


@pytest.fixture
async def vendor_core(regtest: Regtest) -> AsyncIterator[BitcoinCore]:
    async for core in _core(regtest, "vendor"):
        yield core


@pytest.fixture
async def moderator_core(regtest: Regtest) -> AsyncIterator[BitcoinCore]:
    async for core in _core(regtest, "moderator"):
        yield core
