"""Settings, error mapping and the BTC <-> satoshi conversions of the Bitcoin Core adapter.

Core's JSON numbers arrive as ``Decimal`` (python-bitcoinrpc parses them so); amounts go to Core
as exact decimal text ("0.00012345"), never as floats.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from bitcoinrpc.authproxy import JSONRPCException

from ..core.config import Config
from ..core.errors import WalletError
from ..core.ports import DecodedPsbt, PsbtInput, PsbtOutput, Utxo, WalletKey

COIN = 100_000_000
RPC_TIMEOUT = 30.0
DEFAULT_PORTS = {"main": 8332, "test": 18332, "signet": 38332, "regtest": 18443}
COOKIE_DIRS = {"main": "", "test": "testnet3", "signet": "signet", "regtest": "regtest"}

# Core's RPC error codes (src/rpc/protocol.h) the adapter acts on.
RPC_WALLET_ERROR = -4
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_WALLET_NOT_FOUND = -18
RPC_DESERIALIZATION_ERROR = -22
RPC_ALREADY_IN_UTXO_SET = -27
RPC_IN_WARMUP = -28
RPC_WALLET_ALREADY_LOADED = -35
RPC_WALLET_ALREADY_EXISTS = -36
RPC_METHOD_NOT_FOUND = -32601
NON_JSON_ANSWER = -342  # python-bitcoinrpc's code for an HTTP answer that is not JSON (401, 403...)

_PUBKEY = re.compile(r"^0[23][0-9a-f]{64}$")
_ORIGIN = re.compile(r"^\[[0-9a-f]{8}(/[0-9]+[h']?)*\]$")


class RpcError(WalletError):
    """Core answered an RPC with an error; ``rpc_code`` is Core's code, ``core_message`` its text."""

    def __init__(self, message: str, rpc_code: int | None, core_message: str) -> None:
        super().__init__(message)
        self.rpc_code = rpc_code
        self.core_message = core_message


class WrongChain(WalletError):
    """Core runs another chain than ``bitcoin_network``: a start-up error, not a passing outage."""


def default_cookie(network: str) -> Path:
    """Core's cookie for ``network`` in its default datadir (~/.bitcoin/<network dir>/.cookie)."""
    return Path.home() / ".bitcoin" / COOKIE_DIRS[network] / ".cookie"


@dataclass(frozen=True)
class BitcoinSettings:
    """Where Core is and how to log in; the cookie is read at every call (Core rewrites it at start)."""

    url: str  # without credentials, e.g. http://127.0.0.1:8332
    network: str = "main"
    wallet: str = ""  # the signing wallet; "" = the only one Core has
    cookie: Path | None = None  # None when user/password are set
    user: str = ""
    password: str = field(default="", repr=False)
    fallback_fee_rate: int = 10  # sat/vB
    timeout: float = RPC_TIMEOUT

    @classmethod
    def from_config(cls, config: Config) -> BitcoinSettings:
        names = ["bitcoin_network", "bitcoin_rpc_url", "bitcoin_rpc_cookie", "bitcoin_rpc_user"]
        names += ["bitcoin_rpc_password", "bitcoin_wallet", "fallback_fee_rate"]
        return cls.from_values({name: getattr(config, name) for name in names})

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> BitcoinSettings:
        """From settings by name (``Config`` field names; missing ones take their defaults)."""
        network = str(values.get("bitcoin_network") or "main")
        if network not in DEFAULT_PORTS:
            raise ValueError(f"unknown bitcoin_network {network!r}")
        user = str(values.get("bitcoin_rpc_user") or "")
        cookie = str(values.get("bitcoin_rpc_cookie") or "")
        return cls(
            url=str(values.get("bitcoin_rpc_url") or f"http://127.0.0.1:{DEFAULT_PORTS[network]}"),
            network=network,
            wallet=str(values.get("bitcoin_wallet") or ""),
            cookie=None if user else (Path(cookie).expanduser() if cookie else default_cookie(network)),
            user=user,
            password=str(values.get("bitcoin_rpc_password") or ""),
            fallback_fee_rate=int(values.get("fallback_fee_rate") or 10),
        )

    def credentials(self) -> tuple[str, str]:
        if self.cookie is None:
            return self.user, self.password
        try:
            text = self.cookie.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise WalletError(
                f"cannot read Bitcoin Core's cookie {self.cookie} ({exc.strerror}): is bitcoind running for "
                f"{self.network}? set bitcoin_rpc_cookie, or bitcoin_rpc_user and bitcoin_rpc_password"
            ) from exc
        user, sep, password = text.partition(":")
        if not sep:
            raise WalletError(f"{self.cookie} is not a Bitcoin Core cookie file: check bitcoin_rpc_cookie")
        return user, password


def rpc_error(method: str, exc: JSONRPCException, wallet: str | None, settings: BitcoinSettings) -> RpcError:
    """Core's error answer -> an ``RpcError`` whose message says what to do."""
    code = exc.code if isinstance(exc.code, int) else None
    text = str(exc.message or exc)
    if code == NON_JSON_ANSWER and "401" in text:
        how = "bitcoin_rpc_user and bitcoin_rpc_password" if settings.user else f"the cookie {settings.cookie}"
        message = (
            f"Bitcoin Core at {settings.url} refused our credentials for {method}: check {how} "
            "(Core writes a new cookie at each start)"
        )
    elif code == NON_JSON_ANSWER:
        message = f"Bitcoin Core at {settings.url} answered {method} with {text}: check bitcoin_rpc_url"
    elif code == RPC_IN_WARMUP:
        message = f"Bitcoin Core is starting ({text}): payments resume when it is ready"
    elif code == RPC_METHOD_NOT_FOUND:
        message = f"Bitcoin Core has no RPC {method}: Pasar needs Bitcoin Core 26 or newer with its wallet enabled"
    elif code == RPC_WALLET_NOT_FOUND:
        message = f"Bitcoin Core has no wallet {wallet!r} loaded ({text}): check bitcoin_wallet"
    else:
        message = f"Bitcoin Core refused {method}: {text} (code {code})"
    return RpcError(message, code, text)


def to_sats(value: object) -> int:
    """A BTC amount from Core (Decimal) -> integer satoshis; a fraction of a satoshi is an error."""
    try:
        amount = Decimal(str(value)) * COIN
    except InvalidOperation as exc:
        raise WalletError(f"Bitcoin Core sent an amount that is not a number: {value!r}") from exc
    if amount != amount.to_integral_value():
        raise WalletError(f"Bitcoin Core sent an amount finer than a satoshi: {value!r}")
    return int(amount)


def to_btc(sat: int) -> str:
    """Integer satoshis -> the exact decimal text Core reads as BTC."""
    if sat < 0:
        raise ValueError(f"a negative amount: {sat} sat")
    return f"{sat // COIN}.{sat % COIN:08d}"


def sat_per_vb(btc_per_kvb: object) -> int:
    """A fee rate in BTC/kvB (Core's unit) -> sat/vB, rounded up."""
    try:
        return math.ceil(Decimal(str(btc_per_kvb)) * COIN / 1000)
    except (InvalidOperation, ValueError, OverflowError) as exc:
        raise WalletError(f"Bitcoin Core sent a fee rate that is not a number: {btc_per_kvb!r}") from exc


def utxo(row: Mapping[str, Any]) -> Utxo:
    return Utxo(
        txid=str(row["txid"]),
        vout=int(row["vout"]),
        amount_sat=to_sats(row["amount"]),
        confirmations=int(row["confirmations"]),
        address=str(row.get("address", "")),
    )


def wallet_key(address: str, info: Mapping[str, Any], wallet: str) -> WalletKey:
    """``getaddressinfo`` -> the key and its origin (from ``desc`` "wpkh([fp/path]pubkey)#...")."""
    pubkey = str(info.get("pubkey", ""))
    if not _PUBKEY.match(pubkey) or not info.get("ismine"):
        raise WalletError(
            f"Bitcoin Core's wallet {wallet!r} gave no key of its own for {address}: "
            "bitcoin_wallet must be a descriptor wallet with private keys"
        )
    desc = str(info.get("desc", ""))
    origin = ""
    if desc.startswith("wpkh([") and "]" in desc:
        origin = desc[len("wpkh(") : desc.index("]") + 1].replace("'", "h")
    elif info.get("hdmasterfingerprint") and str(info.get("hdkeypath", "")).startswith("m/"):
        path = str(info["hdkeypath"])[1:].replace("'", "h")
        origin = f"[{info['hdmasterfingerprint']}{path}]"
    return WalletKey(pubkey=pubkey, origin=origin if _ORIGIN.match(origin) else "", address=address)


def _input(vin: Mapping[str, Any], entry: Mapping[str, Any]) -> PsbtInput:
    witness_utxo = entry.get("witness_utxo")
    witness_script = entry.get("witness_script")
    return PsbtInput(
        txid=str(vin["txid"]),
        vout=int(vin["vout"]),
        sequence=int(vin["sequence"]),
        utxo_amount_sat=to_sats(witness_utxo["amount"]) if witness_utxo else None,
        utxo_script_hex=str(witness_utxo["scriptPubKey"]["hex"]) if witness_utxo else None,
        witness_script_hex=str(witness_script["hex"]) if witness_script else None,
        sighash=str(entry["sighash"]) if "sighash" in entry else None,
        bip32_pubkeys=tuple(str(d["pubkey"]) for d in entry.get("bip32_derivs", ())),
        partial_sig_pubkeys=tuple(str(k) for k in entry.get("partial_signatures", {})),
        final="final_scriptwitness" in entry or "final_scriptSig" in entry,
    )


def _output(vout: Mapping[str, Any]) -> PsbtOutput:
    script = vout["scriptPubKey"]
    address = script.get("address")
    return PsbtOutput(
        address=str(address) if address else None, script_hex=str(script["hex"]), amount_sat=to_sats(vout["value"])
    )


def decoded_psbt(raw: Mapping[str, Any]) -> DecodedPsbt:
    """``decodepsbt``'s answer -> ``DecodedPsbt`` (inputs in transaction order)."""
    tx = raw["tx"]
    if len(tx["vin"]) != len(raw["inputs"]) or len(tx["vout"]) != len(raw["outputs"]):
        raise WalletError("decodepsbt answered with inputs or outputs that do not match the transaction")
    fee = raw.get("fee")
    return DecodedPsbt(
        version=int(tx["version"]),
        locktime=int(tx["locktime"]),
        inputs=tuple(_input(vin, entry) for vin, entry in zip(tx["vin"], raw["inputs"], strict=True)),
        outputs=tuple(_output(vout) for vout in tx["vout"]),
        fee_sat=to_sats(fee) if fee is not None else None,
        vsize=int(tx["vsize"]),
    )
