"""The directory's chain check of a review's escrow outpoint, on the real regtest bitcoind."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from node.adapters.bitcoin import BitcoinCore
from node.adapters.directory_schema import MIGRATIONS
from node.adapters.sqlite import SQLiteDatabase
from node.core.crypto import StoreKey
from node.discovery.directory import Directory, DirectoryLimits
from node.discovery.review_checks import ReviewChecks
from node.payments import escrow
from node.payments.review_check import ChainReviewChecker
from tests.conftest import watch_name
from tests.regtest import Regtest, free_port, sats
from tests.unit.review_helpers import make

STORE = StoreKey.generate()


@pytest.fixture
async def core(regtest: Regtest) -> AsyncIterator[BitcoinCore]:
    adapter = regtest.adapter("miner", watch_name("miner"))
    await adapter.ensure_wallets()
    yield adapter
    regtest.cli("unloadwallet", adapter.watch_wallet, False)
    adapter.close()


def _escrow_like(n: int) -> str:
    """A P2WSH address of regtest (escrows are P2WSH), from a throwaway witness script."""
    return escrow.escrow_address(bytes([0x51]) + n.to_bytes(2, "big") + bytes([0x75]), "regtest")


def _paid(regtest: Regtest, address: str, sat: int = 100_000) -> tuple[str, int, str]:
    """Fund ``address`` from the miner wallet and mine it: (txid, vout, block)."""
    txid = regtest.fund("miner", address, sat)
    [block] = regtest.mine(1)
    tx = regtest.cli("getrawtransaction", txid, True, block)
    vout = next(o["n"] for o in tx["vout"] if o["scriptPubKey"].get("address") == address)
    assert sats(tx["vout"][vout]["value"]) == sat
    return txid, vout, block


def _review(txid: str, vout: int, block: str, address: str):
    return make(STORE, txid=txid, vout=vout, block=block, address=address)


async def test_a_paid_escrow_outpoint_is_checked(core, regtest):
    address = _escrow_like(1)
    txid, vout, block = _paid(regtest, address)
    checker = ChainReviewChecker(core, "regtest")
    assert await checker.check(_review(txid, vout, block, address)) == "checked"


async def test_wrong_address_block_or_output_fail(core, regtest):
    address, other = _escrow_like(2), _escrow_like(3)
    txid, vout, block = _paid(regtest, address)
    [later] = regtest.mine(1)
    checker = ChainReviewChecker(core, "regtest")
    wrong_address = await checker.check(_review(txid, vout, block, other))
    assert wrong_address.startswith("failed: ") and "another address" in wrong_address
    assert (await checker.check(_review(txid, vout, later, address))).startswith("failed: block ")
    assert (await checker.check(_review(txid, 9, block, address))).startswith("failed: ")
    not_escrow = regtest.address("miner")  # a wallet's P2WPKH address: no escrow pays that
    assert "P2WSH" in await checker.check(_review(txid, vout, block, not_escrow))


async def test_without_core_or_with_core_down_reviews_stay_unchecked(regtest):
    address = _escrow_like(4)
    txid, vout, block = _paid(regtest, address)
    review = _review(txid, vout, block, address)
    assert await ChainReviewChecker(None, "regtest").check(review) == "unchecked"
    down = regtest.adapter("miner", watch_name("miner"), bitcoin_rpc_url=f"http://127.0.0.1:{free_port()}")
    try:
        assert await ChainReviewChecker(down, "regtest").check(review) == "unchecked"
    finally:
        down.close()


async def test_the_directory_loop_marks_reviews(core, regtest, tmp_path):
    db = SQLiteDatabase(tmp_path / "directory.sqlite", MIGRATIONS, synchronous="NORMAL")
    await db.open()
    try:
        directory = Directory(db, limits=DirectoryLimits())
        await directory.open()
        address, other = _escrow_like(5), _escrow_like(6)
        txid, vout, block = _paid(regtest, address)
        assert (
            await directory.add_reviews([_review(txid, vout, block, address), _review(txid, vout, block, other)]) == 2
        )
        checks = ReviewChecks(directory, ChainReviewChecker(core, "regtest"), per_round=10)
        assert await checks.check_once() == 2
        assert await checks.check_once() == 0  # checked and failed ones are not checked again
        marks = await db.execute_fn(lambda c: dict(c.execute("SELECT address, chain FROM reviews").fetchall()))
        assert marks[address] == "checked" and marks[other].startswith("failed: ")
    finally:
        await db.close()


async def test_a_block_core_does_not_know_stays_unchecked_and_a_stale_one_fails(core, regtest):
    address = _escrow_like(7)
    txid, vout, block = _paid(regtest, address)
    checker = ChainReviewChecker(core, "regtest")
    unknown = "00" * 32  # e.g. a block this node has not synced yet: nothing is decided
    assert await checker.check(_review(txid, vout, unknown, address)) == "unchecked"
    regtest.cli("invalidateblock", block)
    try:
        regtest.mine(2)  # another branch wins: the funding block is no longer in the active chain
        assert (await checker.check(_review(txid, vout, block, address))).startswith("failed: ")
    finally:
        regtest.cli("reconsiderblock", block)
