"""``BitcoinCore`` (node/adapters/bitcoin.py) against a real regtest bitcoind (tests/regtest.py).

Every method of ``ports.Bitcoin`` on the 2-of-3 escrow of docs (``wsh(or_d(multi(2,B,V,M),
and_v(v:pk(V2),older(N))))``): keys, descriptor checksum and address, watching, funding, a PSBT signed
by two wallets, the vendor's timeout claim (BIP68), then Core down, wrong chain, wrong credentials,
password auth, restarts and the wallet checks at start.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from bitcoinrpc.authproxy import JSONRPCException

from node.adapters.bitcoin import BitcoinCore, BitcoinSettings, RpcError, WrongChain
from node.adapters.bitcoin_codec import rpc_error, sat_per_vb, to_btc, to_sats
from node.core import config as cfg
from node.core.errors import ValidationError, WalletError
from node.core.ports import WalletKey
from tests.conftest import watch_name
from tests.regtest import Regtest, find_bitcoind, free_port

NON_RBF = 0xFFFFFFFE
ORIGIN = re.compile(r"^\[[0-9a-f]{8}/84h/1h/0h/0/\d+\]$")


def keyexpr(key: WalletKey) -> str:
    return key.origin + key.pubkey


def escrow(buyer: str, v: WalletKey, m: WalletKey, v2: WalletKey, blocks: int) -> str:
    return f"wsh(or_d(multi(2,{buyer},{keyexpr(v)},{keyexpr(m)}),and_v(v:pk({keyexpr(v2)}),older({blocks}))))"


@dataclass(frozen=True)
class Funded:
    descriptor: str  # with its checksum
    address: str
    txid: str  # the payment
    buyer: str  # [origin]pubkey
    v: WalletKey
    v2: WalletKey
    m: WalletKey


async def funded_escrow(
    regtest: Regtest, vendor: BitcoinCore, moderator: BitcoinCore, *, blocks: int, sat: int
) -> Funded:
    """Keys from three wallets, the escrow watched by vendor and moderator, paid by the buyer, mined."""
    v, v2, m = await vendor.new_key(), await vendor.new_key(), await moderator.new_key()
    buyer = regtest.key("buyer")
    bare = escrow(buyer, v, m, v2, blocks)
    descriptor = f"{bare}#{await vendor.checksum(bare)}"
    address = await vendor.derive_address(descriptor)
    await vendor.watch(descriptor)
    await moderator.watch(descriptor)
    txid = regtest.fund("buyer", address, sat)
    regtest.mine(1)
    return Funded(descriptor, address, txid, buyer, v, v2, m)


# -- pure conversions ----------------------------------------------------------------
def test_amounts_are_exact_satoshis():
    assert to_btc(1) == "0.00000001" and to_btc(2_100_000_000_000_000) == "21000000.00000000"
    assert to_sats(Decimal("0.00012345")) == 12345 and to_sats(Decimal("1E-8")) == 1
    with pytest.raises(WalletError, match="finer than a satoshi"):
        to_sats(Decimal("0.000000001"))
    with pytest.raises(ValueError, match="negative"):
        to_btc(-1)
    assert sat_per_vb(Decimal("0.00001000")) == 1 and sat_per_vb(Decimal("0.00001001")) == 2
    assert sat_per_vb(Decimal("0.000001")) == 1  # 0.1 sat/vB rounds up


def test_rpc_errors_say_what_to_do():
    settings = BitcoinSettings(url="http://127.0.0.1:1", cookie=Path("/nowhere/.cookie"))
    unauthorized = JSONRPCException({"code": -342, "message": "non-JSON HTTP response with '401 Unauthorized'"})
    assert "refused our credentials" in rpc_error("getblockcount", unauthorized, None, settings).message
    warmup = rpc_error("getblockcount", JSONRPCException({"code": -28, "message": "Loading"}), None, settings)
    assert warmup.rpc_code == -28 and "starting" in warmup.message
    other = rpc_error("sendrawtransaction", JSONRPCException({"code": -26, "message": "dust"}), None, settings)
    assert (
        isinstance(other, WalletError) and other.message == "Bitcoin Core refused sendrawtransaction: dust (code -26)"
    )


class Answers(BitcoinCore):
    """Pure logic only: canned answers instead of Core (the regtest tests below cover the RPCs)."""

    def __init__(self, answers: dict[str, object]) -> None:
        super().__init__(BitcoinSettings(url="http://127.0.0.1:1", fallback_fee_rate=3), "w")
        self.answers = answers

    async def _rpc(self, method, *params, wallet=None, timeout=None):
        return self.answers[method]


@pytest.mark.parametrize(
    ("estimate", "floor", "rate"),
    [
        ({"feerate": Decimal("0.00012345")}, Decimal("0.00001"), 13),  # 12.345 sat/vB, rounded up
        ({"errors": ["Insufficient data or no feerate found"]}, Decimal("0.00001"), 3),  # the fallback
        ({"feerate": Decimal("0.00002")}, Decimal("0.00005001"), 6),  # never below mempoolminfee
        ({"errors": []}, Decimal("0.0001"), 10),
    ],
)
async def test_fee_rate_is_the_estimate_or_the_fallback_never_below_the_mempool(estimate, floor, rate):
    core = Answers({"estimatesmartfee": estimate, "getmempoolinfo": {"mempoolminfee": floor}})
    assert await core.fee_rate() == rate


def test_settings_from_config_default_to_the_networks_port_and_cookie(tmp_path):
    main = BitcoinSettings.from_config(cfg.Config(data_dir=tmp_path))
    assert main.url == "http://127.0.0.1:8332" and main.cookie == Path.home() / ".bitcoin" / ".cookie"
    test = BitcoinSettings.from_config(cfg.Config(data_dir=tmp_path, bitcoin_network="test"))
    assert test.url.endswith(":18332") and test.cookie == Path.home() / ".bitcoin" / "testnet3" / ".cookie"
    auth = cfg.load(tmp_path, env={"PASAR_BITCOIN_RPC_USER": "u", "PASAR_BITCOIN_RPC_PASSWORD": "p"})
    assert BitcoinSettings.from_config(auth).cookie is None
    assert "password=" not in repr(BitcoinSettings.from_config(auth))
    assert cfg.load(tmp_path, env={"PASAR_BITCOIND": "/x/bitcoind"})  # the tests' variable is no setting
    floaty = cfg.load(tmp_path, env={}, flags={"payment_poll_interval": "1"})
    assert floaty.payment_poll_interval == 1.0
    (tmp_path / "pasar.toml").write_text("payment_poll_interval = 2\n")
    assert cfg.load(tmp_path, env={}).payment_poll_interval == 2.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PASAR_BITCOIN_NETWORK": "testnet"}, "must be one of main, test, signet, regtest"),
        ({"PASAR_ESCROW_TIMEOUT_BLOCKS": "70000"}, "between 144 and 65535"),
        ({"PASAR_CONFIRMATIONS": "101"}, "between 0 and 100"),
        ({"PASAR_PAYMENT_POLL_INTERVAL": "0.1"}, "at least 0.2"),
        ({"PASAR_BITCOIN_RPC_URL": "http://u:p@127.0.0.1:8332"}, "without credentials"),
    ],
)
def test_bad_payment_settings_fail_at_start(tmp_path, env, message):
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load(tmp_path, env=env)


# -- every method on the shared regtest ---------------------------------------------------
async def test_chain_height_and_the_chain_check(vendor_core, regtest):
    assert await vendor_core.chain() == "regtest"
    assert await vendor_core.height() == regtest.height() >= 102
    await vendor_core.check_chain("regtest")
    for network in ("main", "test", "signet"):
        with pytest.raises(WrongChain, match=f"runs the 'regtest' chain but bitcoin_network is '{network}'"):
            await vendor_core.check_chain(network)


async def test_new_key_comes_from_the_signing_wallet_with_its_origin(vendor_core, regtest):
    key = await vendor_core.new_key()
    assert re.fullmatch(r"0[23][0-9a-f]{64}", key.pubkey) and ORIGIN.match(key.origin)
    assert key.address.startswith("bcrt1q")
    info = regtest.cli("getaddressinfo", key.address, wallet="vendor")
    assert info["ismine"] and info["pubkey"] == key.pubkey
    assert (await vendor_core.new_key()).pubkey != key.pubkey


async def test_escrow_release_signed_by_vendor_and_buyer(vendor_core, moderator_core, regtest):
    funded = await funded_escrow(regtest, vendor_core, moderator_core, blocks=50, sat=1_000_000)
    descriptor, address, txid = funded.descriptor, funded.address, funded.txid
    assert re.fullmatch(r".+#[0-9a-z]{8}", descriptor) and address.startswith("bcrt1q") and len(address) == 64
    [coin] = await vendor_core.unspent([address])
    assert (coin.txid, coin.amount_sat, coin.confirmations, coin.address) == (txid, 1_000_000, 1, address)
    assert await moderator_core.unspent([address]) == [coin]
    assert await vendor_core.unspent([]) == []
    pay_vendor, refund = regtest.address("vendor"), regtest.address("buyer")
    outputs = [(pay_vendor, 600_000), (refund, 390_000)]
    psbt = await vendor_core.create_psbt([(txid, coin.vout, NON_RBF)], outputs, descriptor)
    decoded = await vendor_core.decode_psbt(psbt)
    assert (decoded.version, decoded.locktime, decoded.fee_sat) == (2, 0, 10_000)
    [entry] = decoded.inputs
    assert (entry.txid, entry.vout, entry.sequence, entry.utxo_amount_sat) == (txid, coin.vout, NON_RBF, 1_000_000)
    spk = regtest.cli("getaddressinfo", address, wallet="buyer")["scriptPubKey"]
    assert entry.utxo_script_hex == spk and entry.witness_script_hex is not None
    assert spk == "0020" + hashlib.sha256(bytes.fromhex(entry.witness_script_hex)).hexdigest()
    keys = {funded.buyer[-66:], funded.v.pubkey, funded.v2.pubkey, funded.m.pubkey}
    assert set(entry.bip32_pubkeys) == keys and entry.sighash is None and not entry.partial_sig_pubkeys
    assert [(o.address, o.amount_sat) for o in decoded.outputs] == outputs and decoded.vsize > 0

    signed_v = await vendor_core.sign(psbt)  # the vendor wallet signs with every key it has: V and V2
    vendor_sigs = set((await vendor_core.decode_psbt(signed_v)).inputs[0].partial_sig_pubkeys)
    assert vendor_sigs == {funded.v.pubkey, funded.v2.pubkey}
    assert not (await vendor_core.finalize(signed_v)).complete  # V2 alone needs the timeout
    signed_b = regtest.sign("buyer", psbt)
    combined = await vendor_core.combine([signed_v, signed_b])
    assert set((await vendor_core.decode_psbt(combined)).inputs[0].partial_sig_pubkeys) == {
        funded.buyer[-66:],
        *vendor_sigs,
    }
    finalized = await vendor_core.decode_psbt(regtest.cli("finalizepsbt", combined, False)["psbt"])
    assert finalized.inputs[0].final and not finalized.inputs[0].partial_sig_pubkeys
    final = await vendor_core.finalize(combined)
    assert final.complete and final.hex
    assert await vendor_core.test_accept(final.hex) is None
    spent = await vendor_core.broadcast(final.hex)
    regtest.sync()  # the watch-only wallet learns of the spend asynchronously
    assert await vendor_core.tx_confirmations(spent) == 0 and regtest.in_mempool(spent)
    assert await vendor_core.unspent([address]) == []
    regtest.mine(1)
    assert await vendor_core.tx_confirmations(spent) == 1
    assert await vendor_core.broadcast(final.hex) == spent  # a retry after a restart is harmless
    assert await vendor_core.tx_confirmations("00" * 32) is None


async def test_a_sighash_other_than_all_is_shown(vendor_core, moderator_core, regtest):
    funded = await funded_escrow(regtest, vendor_core, moderator_core, blocks=50, sat=100_000)
    [coin] = await vendor_core.unspent([funded.address])
    psbt = await vendor_core.create_psbt(
        [(coin.txid, coin.vout, NON_RBF)], [(regtest.address("buyer"), 99_000)], funded.descriptor
    )
    tampered = regtest.cli("walletprocesspsbt", psbt, True, "NONE", True, False, wallet="buyer")["psbt"]
    [entry] = (await vendor_core.decode_psbt(tampered)).inputs
    assert entry.sighash == "NONE" and entry.partial_sig_pubkeys == (funded.buyer[-66:],)


async def test_timeout_claim_needs_version_2_and_the_sequence(vendor_core, moderator_core, regtest):
    blocks = 5
    funded = await funded_escrow(regtest, vendor_core, moderator_core, blocks=blocks, sat=500_000)
    descriptor, address, txid = funded.descriptor, funded.address, funded.txid
    [coin] = await vendor_core.unspent([address])
    claim_to = (await vendor_core.new_key()).address
    psbt = await vendor_core.create_psbt([(txid, coin.vout, blocks)], [(claim_to, 499_000)], descriptor)
    decoded = await vendor_core.decode_psbt(psbt)
    assert decoded.version == 2 and decoded.inputs[0].sequence == blocks
    final = await vendor_core.finalize(await vendor_core.sign(psbt))  # V2 alone
    assert final.complete and final.hex
    assert await vendor_core.test_accept(final.hex) == "non-BIP68-final"
    regtest.mine(blocks - 2)  # confirmed at h; spendable in block h + blocks, i.e. tip h + blocks - 1
    assert await vendor_core.test_accept(final.hex) == "non-BIP68-final"
    regtest.mine(1)
    assert await vendor_core.test_accept(final.hex) is None
    assert await vendor_core.broadcast(final.hex)


async def test_unconfirmed_and_several_payments_are_all_seen(vendor_core, moderator_core, regtest):
    v, v2, m = await vendor_core.new_key(), await vendor_core.new_key(), await moderator_core.new_key()
    bare = escrow(regtest.key("buyer"), v, m, v2, 144)
    await vendor_core.watch(bare)  # the checksum is added when missing
    await vendor_core.watch(bare)  # idempotent
    address = await vendor_core.derive_address(bare)
    first, second = regtest.fund("buyer", address, 30_000), regtest.fund("buyer", address, 20_000)
    coins = await vendor_core.unspent([address])
    assert {(c.txid, c.amount_sat, c.confirmations) for c in coins} == {(first, 30_000, 0), (second, 20_000, 0)}


async def test_concurrent_watches_wait_for_each_other(vendor_core, moderator_core, regtest):
    """Core refuses an import while another rescans: one adapter queues them, two retry."""
    keys = [await vendor_core.new_key() for _ in range(6)]
    m = await moderator_core.new_key()
    bare = [escrow(regtest.key("buyer"), keys[i], m, keys[i + 1], 144 + i) for i in range(5)]
    await asyncio.gather(*(vendor_core.watch(d) for d in bare[:3]))
    other = regtest.adapter("vendor", vendor_core.watch_wallet)  # another process, the same wallet
    await asyncio.gather(vendor_core.watch(bare[3]), other.watch(bare[4]))
    addresses = [await vendor_core.derive_address(d) for d in bare]
    regtest.fund("buyer", addresses[4], 10_000)
    assert [c.amount_sat for c in await vendor_core.unspent(addresses)] == [10_000]


async def test_fee_rate_falls_back_when_core_has_no_estimate(bitcoind, tmp_path):
    # A chain of its own: the session's regtest gains fee estimates once other tests have paid fees.
    fresh = Regtest(tmp_path / "fresh", bitcoind=bitcoind.bitcoind)
    try:
        await asyncio.to_thread(fresh.start)
        await asyncio.to_thread(fresh.create_wallet, "vendor")
        assert fresh.cli("estimatesmartfee", 6).get("feerate") is None  # a fresh regtest has no data
        core = fresh.adapter("vendor", watch_name("fee"), fallback_fee_rate=7)
        assert await core.fee_rate() == 7
        assert await fresh.adapter("vendor", watch_name("fee"), fallback_fee_rate=1).fee_rate() >= 1
    finally:
        await asyncio.to_thread(fresh.stop)


async def test_bad_psbt_and_descriptor_are_validation_errors(vendor_core):
    with pytest.raises(ValidationError) as caught:
        await vendor_core.decode_psbt("cHNidP8BAAoCAAAAAAAAAAAAAAAA")
    assert "psbt" in caught.value.fields and "not a PSBT" in caught.value.fields["psbt"]
    with pytest.raises(ValidationError) as caught:
        await vendor_core.decode_psbt("not base64 at all")
    assert "psbt" in caught.value.fields
    key = "02" + "11" * 32
    with pytest.raises(ValidationError, match="descriptor"):
        await vendor_core.checksum(f"wsh(multi(2,{key},{key}))")


async def test_calls_are_counted(vendor_core):
    before = sum(vendor_core.calls.values())
    await vendor_core.height()
    assert vendor_core.calls["getblockcount"] >= 1 and sum(vendor_core.calls.values()) == before + 1


# -- wallets at start ----------------------------------------------------------------------
async def test_ensure_wallets_creates_the_watch_only_wallet(regtest):
    core = regtest.adapter("moderator", watch_name("new"))
    await core.ensure_wallets()
    info = regtest.cli("getwalletinfo", wallet=core.watch_wallet)
    assert info["private_keys_enabled"] is False
    await core.ensure_wallets()  # idempotent
    regtest.cli("unloadwallet", core.watch_wallet)
    assert await core.unspent([regtest.address("buyer")]) == []  # loaded again on demand
    regtest.cli("unloadwallet", core.watch_wallet)


async def test_ensure_wallets_refuses_unusable_wallets(regtest):
    with pytest.raises(WalletError, match="has no wallet 'nosuch'"):
        await regtest.adapter("nosuch", watch_name("x")).ensure_wallets()
    watcher = watch_name("keyless")
    regtest.create_wallet(watcher, watch_only=True)
    with pytest.raises(WalletError, match="has no private keys"):
        await regtest.adapter(watcher, watch_name("x")).ensure_wallets()
    with pytest.raises(WalletError, match="holds private keys"):
        await regtest.adapter("vendor", "buyer").ensure_wallets()
    with pytest.raises(WalletError, match="several wallets"):
        await regtest.adapter("", watch_name("x")).new_key()


# -- a private bitcoind for the destructive cases -------------------------------------------
PASSWORD = "p/ss?w#rd@x:y"


@pytest.fixture(scope="module")
def private_node(tmp_path_factory) -> Iterator[Regtest]:
    if find_bitcoind() is None:
        pytest.skip("no bitcoind")
    salt = secrets.token_hex(16)
    digest = hmac.new(salt.encode(), PASSWORD.encode(), hashlib.sha256).hexdigest()
    extra = (f"-rpcauth=pasar:{salt}${digest}", "-minrelaytxfee=0.0001")
    node = Regtest(tmp_path_factory.mktemp("private-bitcoind"), extra_args=extra)
    try:
        node.start()
        node.create_wallet("signer")
        yield node
    finally:
        node.stop()


async def test_password_auth_and_the_mempool_floor(private_node):
    core = private_node.adapter("signer", watch_name("pw"), bitcoin_rpc_user="pasar", bitcoin_rpc_password=PASSWORD)
    assert core.settings.cookie is None
    await core.ensure_wallets()
    assert await core.chain() == "regtest"
    assert await core.fee_rate() == 10  # minrelaytxfee 10 sat/vB beats the fallback of 2
    wrong = private_node.adapter("signer", watch_name("pw"), bitcoin_rpc_user="pasar", bitcoin_rpc_password="nope")
    with pytest.raises(WalletError, match="refused our credentials for getblockcount: check bitcoin_rpc_user"):
        await wrong.height()


async def test_wrong_cookie_is_refused(private_node, tmp_path):
    cookie = tmp_path / ".cookie"
    cookie.write_text("__cookie__:" + "00" * 32)
    core = private_node.adapter("signer", watch_name("c"), bitcoin_rpc_cookie=str(cookie))
    with pytest.raises(WalletError, match=r"refused our credentials .* check the cookie"):
        await core.chain()
    cookie.write_text("garbage")
    with pytest.raises(WalletError, match="not a Bitcoin Core cookie"):
        await core.chain()


async def test_core_down_then_back_after_a_restart(private_node):
    core = private_node.adapter("signer", watch_name("down"))
    await core.ensure_wallets()
    key = await core.new_key()
    others = ("02" + "22" * 32, "03" + "33" * 32, "02" + "44" * 32)
    bare = f"wsh(or_d(multi(2,{keyexpr(key)},{others[0]},{others[1]}),and_v(v:pk({others[2]}),older(144))))"
    await core.watch(bare)
    address = await core.derive_address(bare)
    private_node.stop()
    try:
        with pytest.raises(WalletError, match=r"cannot read Bitcoin Core's cookie .* is bitcoind running"):
            await core.height()
        elsewhere = BitcoinCore(BitcoinSettings(url=f"http://127.0.0.1:{free_port()}", user="u"), "w")
        with pytest.raises(WalletError, match=r"did not answer getblockcount .* is bitcoind running"):
            await elsewhere.height()
    finally:
        private_node.start()
    assert await core.unspent([address]) == []  # new cookie read, watch-only wallet back
    assert await core.new_key()


async def test_unreachable_port_is_a_wallet_error_not_a_hang():
    core = BitcoinCore(BitcoinSettings(url=f"http://127.0.0.1:{free_port()}", user="u", timeout=5), "w")
    with pytest.raises(WalletError, match="check bitcoin_rpc_url"):
        await core.fee_rate()
    with pytest.raises(WalletError) as caught:
        await core.chain()
    assert not isinstance(caught.value, RpcError)  # no answer at all, not an error answer


def test_the_harness_recovers_from_a_crash_with_its_wallets(private_node):
    height = private_node.height()
    private_node.kill()
    assert not private_node.running
    private_node.start()
    assert private_node.height() == height and "signer" in private_node.cli("listwallets")
