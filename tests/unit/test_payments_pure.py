"""The pure parts of the payments service: sealing to a store's key, txids, funding sums, settings."""

import hashlib
from pathlib import Path

import pytest

from node.core.config import Config
from node.core.crypto import StoreKey
from node.core.errors import StorageError
from node.core.ports import Utxo
from node.payments.flows import txid_of
from node.payments.models import Funding
from node.payments.sealing import open_for_store, seal_to_onion
from node.payments.settings import PaymentSettings
from node.payments.watcher import funding_of


def _legacy_txid(tx_hex: str) -> str:
    return hashlib.sha256(hashlib.sha256(bytes.fromhex(tx_hex)).digest()).digest()[::-1].hex()


def test_txid_is_the_hash_without_the_witness() -> None:
    one_in = "01" + "11" * 32 + "01000000" + "02abcd" + "feffffff"
    two_out = "02" + "e803000000000000" + "160014" + "22" * 20 + "0100000000000000" + "00"
    version, locktime = "02000000", "00000000"
    legacy = version + one_in + two_out + locktime
    assert txid_of(legacy) == _legacy_txid(legacy)
    segwit = version + "0001" + one_in + two_out + "03" + "00" + "02aaaa" + "4b" + "cc" * 75 + locktime
    assert txid_of(segwit) == _legacy_txid(legacy)


def test_sealed_text_opens_only_with_the_store_key() -> None:
    key, other = StoreKey.generate(), StoreKey.generate()
    sealed = seal_to_onion(key.onion, "Jane Doe, 1 Main St — ☃")
    assert "Jane" not in sealed
    assert open_for_store(key, sealed) == "Jane Doe, 1 Main St — ☃"
    assert seal_to_onion(key.onion, "x") != seal_to_onion(key.onion, "x")  # ephemeral sender key each time
    with pytest.raises(StorageError, match="restore it from backup"):
        open_for_store(other, sealed)


def _utxo(txid: str, vout: int, sat: int, conf: int) -> Utxo:
    return Utxo(txid=txid, vout=vout, amount_sat=sat, confirmations=conf, address="bcrt1qescrow")


def test_funding_sums_every_utxo_and_bases_the_timeout_on_the_oldest() -> None:
    """Review finding 4: the base used to be the youngest UTXO, so dust paid by anyone pushed the claim back."""
    assert funding_of([], 200, Funding()) == Funding()
    f = funding_of([_utxo("b" * 64, 1, 700, 3), _utxo("a" * 64, 0, 300, 1)], 200, Funding())
    assert f.paid_sat == 1000 and f.confirmations == 1 and f.first_seen_height == 198
    assert f.outpoints == (("a" * 64, 0, 300), ("b" * 64, 1, 700))
    assert f.heights == (("a" * 64, 0, 200), ("b" * 64, 1, 198))
    mempool = funding_of([_utxo("a" * 64, 0, 300, 1), _utxo("c" * 64, 0, 5, 0)], 200, f)
    assert mempool.confirmations == 0 and mempool.first_seen_height == 200 and mempool.heights == (("a" * 64, 0, 200),)
    unconfirmed = funding_of([_utxo("c" * 64, 0, 5, 0)], None, f)
    assert unconfirmed.first_seen_height is None and unconfirmed.heights == ()


def test_settings_from_the_settings_table(tmp_path: Path) -> None:
    s = PaymentSettings.from_config(Config(data_dir=tmp_path))
    assert s.timeout_blocks == 6480 and s.confirmations == 1 and s.enabled
    assert s.network == "main" and s.max_fee_rate == 500
