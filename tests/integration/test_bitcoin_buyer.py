"""The buyer's additions to ``ports.Bitcoin`` (``send``, ``fund``, ``tx_block``, ``output_at``) on regtest."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from node.adapters.bitcoin import BitcoinCore
from node.core.errors import Unavailable, ValidationError, WalletError
from tests.conftest import watch_name
from tests.regtest import Regtest, sats

NO_TX = "00" * 32


@pytest.fixture
async def buyer_core(regtest: Regtest) -> AsyncIterator[BitcoinCore]:
    core = regtest.adapter("buyer", watch_name("buyer"))
    await core.ensure_wallets()
    yield core
    regtest.cli("unloadwallet", core.watch_wallet, False)
    core.close()


def _output(regtest: Regtest, txid: str, address: str) -> tuple[int, int]:
    """(vout, sats) of the output of ``txid`` (a buyer-wallet transaction) paying ``address``."""
    tx = regtest.cli("gettransaction", txid, True, True, wallet="buyer")["decoded"]
    return next((o["n"], sats(o["value"])) for o in tx["vout"] if o["scriptPubKey"].get("address") == address)


async def test_send_pays_the_exact_amount_with_the_fee_on_top(buyer_core, regtest):
    to = regtest.address("vendor")
    before = regtest.balance("buyer")
    txid = await buyer_core.send(to, 123_456)
    regtest.sync()
    assert regtest.in_mempool(txid)
    tx = regtest.cli("gettransaction", txid, wallet="buyer")
    fee = -sats(tx["fee"])
    assert fee > 0 and regtest.balance("buyer") == before - 123_456 - fee
    assert _output(regtest, txid, to)[1] == 123_456


async def test_tx_block_is_none_until_mined_then_the_block_hash(buyer_core, regtest):
    to = regtest.address("vendor")
    txid = await buyer_core.send(to, 50_000)
    regtest.sync()
    assert await buyer_core.tx_block(txid) is None  # in the mempool
    [block] = regtest.mine(1)
    assert await buyer_core.tx_block(txid) == block
    assert await buyer_core.tx_block(NO_TX) is None


async def test_tx_block_sees_a_payment_to_a_watched_descriptor(buyer_core, regtest):
    key = regtest.key("buyer")
    bare = f"wpkh({key})"
    descriptor = f"{bare}#{await buyer_core.checksum(bare)}"
    address = await buyer_core.derive_address(descriptor)
    await buyer_core.watch(descriptor)
    txid = regtest.fund("miner", address, 70_000)  # paid by someone else: only the watch-only wallet sees it
    [block] = regtest.mine(1)
    assert await buyer_core.tx_block(txid) == block


async def test_output_at_reads_the_output_in_its_block(buyer_core, regtest):
    to = regtest.address("vendor")
    txid = await buyer_core.send(to, 80_000)
    [block] = regtest.mine(1)
    vout, _ = _output(regtest, txid, to)
    assert await buyer_core.output_at(txid, vout, block) == (to, 80_000)
    assert await buyer_core.output_at(txid, 7, block) is None  # no such output
    assert await buyer_core.output_at(txid, -1, block) is None
    [other] = regtest.mine(1)
    assert await buyer_core.output_at(txid, vout, other) is None  # not in that block
    assert await buyer_core.output_at(NO_TX, 0, block) is None
    with pytest.raises(Unavailable, match="does not know block"):  # not known (yet): nothing decided
        await buyer_core.output_at(txid, vout, NO_TX)
    assert await buyer_core.output_at("nothex", 0, block) is None
    assert await buyer_core.output_at(txid, vout, "zz") is None


async def test_send_refuses_nothing_to_send_and_reports_core_errors(buyer_core, regtest):
    with pytest.raises(ValidationError, match="positive"):
        await buyer_core.send(regtest.address("vendor"), 0)
    with pytest.raises(ValidationError, match="positive"):
        await buyer_core.fund(regtest.address("vendor"), -1)
    with pytest.raises(WalletError, match="sendtoaddress"):
        await buyer_core.send("bcrt1qnotanaddress", 1000)


async def test_output_at_of_a_block_out_of_the_active_chain_is_none(buyer_core, regtest):
    to = regtest.address("vendor")
    txid = await buyer_core.send(to, 60_000)
    [block] = regtest.mine(1)
    vout, _ = _output(regtest, txid, to)
    regtest.cli("invalidateblock", block)
    try:
        regtest.mine(2)  # the other branch wins
        assert await buyer_core.output_at(txid, vout, block) is None
    finally:
        regtest.cli("reconsiderblock", block)


async def test_fund_builds_the_exact_payment_without_sending_it(buyer_core, regtest):
    to = regtest.address("vendor")
    txid, tx_hex = await buyer_core.fund(to, 77_000)
    assert not regtest.in_mempool(txid)
    decoded = regtest.cli("decoderawtransaction", tx_hex)
    assert decoded["txid"] == txid
    assert [o["n"] for o in decoded["vout"] if o["scriptPubKey"].get("address") == to and sats(o["value"]) == 77_000]
    # its coins are locked: a second funding never spends the same coins
    locked = {(u["txid"], u["vout"]) for u in regtest.cli("listlockunspent", wallet="buyer")}
    assert {(i["txid"], i["vout"]) for i in decoded["vin"]} <= locked
    assert await buyer_core.broadcast(tx_hex) == txid
    assert await buyer_core.broadcast(tx_hex) == txid  # again (a retry after a crash): harmless
    regtest.sync()
    assert regtest.in_mempool(txid)
    regtest.mine(1)
    assert await buyer_core.broadcast(tx_hex) == txid  # confirmed already: the same txid
