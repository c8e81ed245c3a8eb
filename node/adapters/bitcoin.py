"""``ports.Bitcoin`` over the operator's Bitcoin Core JSON-RPC (python-bitcoinrpc).

One ``AuthServiceProxy`` (and one HTTP connection, closed after the call) per RPC, on a small
thread pool of the adapter's own: proxies are not shareable across threads (STYLE.md rule 3), and a
hung Core must not take the event loop's default executor (gossip, crawling and password checks
share it). Every
library or socket error becomes a ``WalletError`` naming the RPC and what to do. BTC ``Decimal``s
exist only here; callers see integer satoshis. Two wallets: the signing wallet
(``bitcoin_wallet``, with private keys) gives keys and signs; the node's watch-only wallet
(``createwallet NAME disable_private_keys=true blank=true``) imports escrow descriptors and sees
their coins.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import http.client
import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlsplit

from bitcoinrpc.authproxy import AuthServiceProxy, JSONRPCException

from ..core.errors import Unavailable, ValidationError, WalletError
from ..core.ports import DecodedPsbt, Finalized, Utxo, WalletKey
from .bitcoin_codec import (
    RPC_ALREADY_IN_UTXO_SET,
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_WALLET_ALREADY_EXISTS,
    RPC_WALLET_ALREADY_LOADED,
    RPC_WALLET_NOT_FOUND,
    BitcoinSettings,
    RpcError,
    WrongChain,
    decoded_psbt,
    rpc_error,
    sat_per_vb,
    to_btc,
    to_sats,
    utxo,
    wallet_key,
)
from .bitcoin_errors import handled
from .bitcoin_watch import SLOW_TIMEOUT, WatchImports

__all__ = ["BitcoinCore", "BitcoinSettings", "RpcError", "WrongChain"]

log = logging.getLogger(__name__)
CHAINS = {"main": {"main"}, "test": {"test", "testnet4"}, "signet": {"signet"}, "regtest": {"regtest"}}
FEE_TARGET = 6  # blocks
MIN_CORE_VERSION = 260000  # descriptor wallets that sign miniscript from the PSBT alone


# RPCs at once: enough for the watcher, a few checkouts and the admin; a hung Core holds no more threads.
RPC_THREADS = 4
RPC_INVALID_PARAMETER = -8  # e.g. a txid or block hash that is not 64 hex


class BitcoinCore:
    """``ports.Bitcoin`` for one Bitcoin Core; ``calls`` counts RPCs by method (benchmarks read it), ``errors``
    the failures that reach callers, by method (no answer, or a refusal the adapter does not handle: see
    bitcoin_errors.py)."""

    def __init__(self, settings: BitcoinSettings, watch_wallet: str) -> None:
        if not watch_wallet:
            raise ValueError("BitcoinCore needs the name of the node's watch-only wallet")
        self._settings = settings
        self._watch = watch_wallet
        self._signing: str | None = settings.wallet or None
        self._imports = WatchImports(self._wallet_rpc, self._with_checksum, watch_wallet)  # retries "rescanning"
        self._pool = ThreadPoolExecutor(max_workers=RPC_THREADS, thread_name_prefix="pasar-bitcoin")
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    @property
    def settings(self) -> BitcoinSettings:
        return self._settings

    @property
    def watch_wallet(self) -> str:
        return self._watch

    async def wallet_names(self) -> tuple[str, str]:
        """(the signing wallet, the watch-only wallet): the ``-rpcwallet=`` names a recovery sheet gives."""
        return await self._signing_wallet(), self._watch

    # -- one RPC ------------------------------------------------------------------
    def _call(self, method: str, params: tuple[Any, ...], wallet: str | None, timeout: float) -> Any:
        """The blocking call (run in a thread): one connection, closed before returning."""
        user, password = self._settings.credentials()
        parts = urlsplit(self._settings.url)
        path = parts.path.rstrip("/") + ("" if wallet is None else "/wallet/" + quote(wallet, safe=""))
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = kind(parts.hostname or "", parts.port, timeout=timeout)
        # Credentials go in the header, not the URL: a password may hold "/", "?" or "#".
        proxy = AuthServiceProxy(f"{parts.scheme}://pasar:-@{parts.netloc}{path}", method, timeout, conn)
        proxy._AuthServiceProxy__auth_header = b"Basic " + base64.b64encode(f"{user}:{password}".encode())
        try:
            return proxy(*params)
        except JSONRPCException as exc:
            raise rpc_error(method, exc, wallet, self._settings) from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise WalletError(
                f"Bitcoin Core did not answer {method} at {self._settings.url} ({exc or type(exc).__name__}): "
                "is bitcoind running? check bitcoin_rpc_url"
            ) from exc
        finally:
            conn.close()

    async def _rpc(self, method: str, *params: Any, wallet: str | None = None, timeout: float | None = None) -> Any:
        self.calls[method] += 1
        call = functools.partial(self._call, method, params, wallet, timeout or self._settings.timeout)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        except RpcError as exc:  # an answer this adapter handles (a wallet to load...) is not an error
            self.errors[method] += not handled(method, exc, wallet)
            raise
        except WalletError:  # no answer
            self.errors[method] += 1
            raise

    def close(self) -> None:
        """Release the RPC threads (calls still running finish on their own timeout)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _wallet_rpc(self, wallet: str, method: str, *params: Any, timeout: float | None = None) -> Any:
        """A wallet RPC; a wallet Core has unloaded (e.g. after its restart) is loaded and the call made again."""
        try:
            return await self._rpc(method, *params, wallet=wallet, timeout=timeout)
        except RpcError as exc:
            if exc.rpc_code != RPC_WALLET_NOT_FOUND:
                raise
        await self._load(wallet)
        return await self._rpc(method, *params, wallet=wallet, timeout=timeout)

    async def _load(self, wallet: str) -> None:
        on_startup = True if wallet == self._watch else None  # the operator's own wallet: their choice
        try:
            await self._rpc("loadwallet", wallet, on_startup, timeout=SLOW_TIMEOUT)
            log.info("loaded wallet %r in Bitcoin Core", wallet)
        except RpcError as exc:
            if exc.rpc_code == RPC_WALLET_ALREADY_LOADED:
                return
            if exc.rpc_code == RPC_WALLET_NOT_FOUND and wallet == self._watch:
                await self._create_watch()
                return
            if exc.rpc_code == RPC_WALLET_NOT_FOUND:
                self.errors["loadwallet"] += 1  # not the watch-only wallet: not handled, an error
                raise WalletError(
                    f"Bitcoin Core has no wallet {wallet!r}: create it (bitcoin-cli createwallet {wallet}) "
                    "or set bitcoin_wallet to one of its wallets"
                ) from exc
            raise

    async def _create_watch(self) -> None:
        try:  # name, disable_private_keys, blank, passphrase, avoid_reuse, descriptors, load_on_startup
            await self._rpc("createwallet", self._watch, True, True, None, False, True, True, timeout=SLOW_TIMEOUT)
            log.info("created the watch-only wallet %r in Bitcoin Core", self._watch)
        except RpcError as exc:
            if exc.rpc_code not in (RPC_WALLET_ALREADY_EXISTS, RPC_WALLET_ALREADY_LOADED):
                raise

    async def _signing_wallet(self) -> str:
        """``bitcoin_wallet``, or the one wallet (besides the watch-only one) Core has when it is empty."""
        if self._signing is not None:
            return self._signing
        loaded = [str(w) for w in await self._rpc("listwallets") if w != self._watch]
        if len(loaded) != 1:
            on_disk = await self._rpc("listwalletdir")
            names = sorted({str(w["name"]) for w in on_disk["wallets"]} - {self._watch})
            if len(loaded) > 1 or len(names) != 1:
                raise WalletError(
                    "bitcoin_wallet is empty and Bitcoin Core has "
                    + (f"several wallets ({', '.join(names)})" if names else "no wallet")
                    + ": set bitcoin_wallet to the wallet that signs for this node"
                )
            loaded = names
        self._signing = loaded[0]
        return self._signing

    # -- start-up checks ------------------------------------------------------------
    async def check_chain(self, network: str) -> None:
        """Refuse (``WrongChain``) a Core whose chain is not ``network`` ("test" accepts testnet3 and testnet4)."""
        chain = await self.chain()
        if chain not in CHAINS.get(network, {network}):
            raise WrongChain(
                f"Bitcoin Core at {self._settings.url} runs the {chain!r} chain but bitcoin_network is "
                f"{network!r}: point bitcoin_rpc_url at a {network} node or change bitcoin_network"
            )

    async def ensure_wallets(self) -> None:
        """Check Core's version; load the signing wallet (it must hold private keys); create or load the
        watch-only wallet."""
        version = int((await self._rpc("getnetworkinfo"))["version"])
        if version < MIN_CORE_VERSION:
            raise WalletError(
                f"Bitcoin Core {version // 10000}.{version // 100 % 100} cannot sign the escrow's miniscript "
                "from a PSBT: Pasar needs Bitcoin Core 26 or newer"
            )
        signing = await self._signing_wallet()
        await self._load(signing)
        info = await self._rpc("getwalletinfo", wallet=signing)
        if not info.get("private_keys_enabled", False):
            raise WalletError(
                f"Bitcoin Core's wallet {signing!r} has no private keys and cannot sign: "
                "set bitcoin_wallet to a wallet with keys"
            )
        await self._load(self._watch)
        info = await self._rpc("getwalletinfo", wallet=self._watch)
        if info.get("private_keys_enabled", True):
            raise WalletError(
                f"Bitcoin Core's wallet {self._watch!r} holds private keys, so it cannot be this node's "
                "watch-only wallet: rename or unload that wallet"
            )

    # -- ports.Bitcoin -------------------------------------------------------------------
    async def chain(self) -> str:
        return str((await self._rpc("getblockchaininfo"))["chain"])

    async def height(self) -> int:
        return int(await self._rpc("getblockcount"))

    async def new_key(self) -> WalletKey:
        wallet = await self._signing_wallet()
        address = str(await self._wallet_rpc(wallet, "getnewaddress", "", "bech32"))
        info = await self._wallet_rpc(wallet, "getaddressinfo", address)
        return wallet_key(address, info, wallet)

    async def checksum(self, descriptor: str) -> str:
        try:
            info = await self._rpc("getdescriptorinfo", descriptor)
        except RpcError as exc:
            if exc.rpc_code != RPC_INVALID_ADDRESS_OR_KEY:
                raise
            raise ValidationError({"descriptor": f"Bitcoin Core refused it: {exc.core_message}"}) from exc
        return str(info["checksum"])

    async def _with_checksum(self, descriptor: str) -> str:
        return descriptor if "#" in descriptor else f"{descriptor}#{await self.checksum(descriptor)}"

    async def derive_address(self, descriptor: str) -> str:
        addresses = await self._rpc("deriveaddresses", await self._with_checksum(descriptor))
        if len(addresses) != 1:
            raise WalletError(f"deriveaddresses gave {len(addresses)} addresses for one escrow descriptor")
        return str(addresses[0])

    async def watch(self, descriptor: str, since: int | None = None) -> None:
        await self._imports.watch(descriptor, since)

    async def rewatch(self, escrows: Sequence[tuple[str, int]]) -> list[str]:
        return await self._imports.rewatch(escrows)

    async def rescan_progress(self) -> float | None:
        return await self._imports.rescan_progress()

    async def unspent(self, addresses: Sequence[str]) -> list[Utxo]:
        if not addresses:
            return []  # listunspent with no address lists every coin of the wallet
        rows = await self._wallet_rpc(self._watch, "listunspent", 0, 9_999_999, list(addresses), True)
        return sorted((utxo(row) for row in rows), key=lambda u: (u.txid, u.vout))

    async def fee_rate(self) -> int:
        estimate = await self._rpc("estimatesmartfee", FEE_TARGET)
        mempool = await self._rpc("getmempoolinfo")
        feerate = estimate.get("feerate")
        rate = sat_per_vb(feerate) if feerate is not None else self._settings.fallback_fee_rate
        return max(rate, sat_per_vb(mempool["mempoolminfee"]), 1)

    async def create_psbt(
        self, inputs: Sequence[tuple[str, int, int]], outputs: Sequence[tuple[str, int]], descriptor: str
    ) -> str:
        if not inputs or not outputs:
            raise ValueError("a payout needs at least one input and one output")
        ins = [{"txid": txid, "vout": vout, "sequence": sequence} for txid, vout, sequence in inputs]
        outs = [{address: to_btc(sat)} for address, sat in outputs]
        # inputs, outputs, locktime 0, replaceable unset (the sequences say it), version 2 (BIP68)
        unsigned = await self._rpc("createpsbt", ins, outs, 0, None, 2)
        return str(await self._rpc("utxoupdatepsbt", unsigned, [await self._with_checksum(descriptor)]))

    async def decode_psbt(self, psbt: str) -> DecodedPsbt:
        try:
            raw = await self._rpc("decodepsbt", psbt)
        except RpcError as exc:
            if exc.rpc_code != RPC_DESERIALIZATION_ERROR:
                raise
            raise ValidationError({"psbt": f"not a PSBT Bitcoin Core can read ({exc.core_message})"}) from exc
        return decoded_psbt(raw)

    async def sign(self, psbt: str) -> str:
        wallet = await self._signing_wallet()
        result = await self._wallet_rpc(wallet, "walletprocesspsbt", psbt, True, "ALL", True, False)
        return str(result["psbt"])

    async def combine(self, psbts: Sequence[str]) -> str:
        return str(await self._rpc("combinepsbt", list(psbts)))

    async def finalize(self, psbt: str) -> Finalized:
        result = await self._rpc("finalizepsbt", psbt, True)
        complete = bool(result.get("complete"))
        return Finalized(complete=complete, hex=str(result["hex"]) if complete else None)

    async def test_accept(self, tx_hex: str) -> str | None:
        result = (await self._rpc("testmempoolaccept", [tx_hex]))[0]
        if result.get("allowed"):
            return None
        return str(result.get("reject-reason") or "rejected")

    async def broadcast(self, tx_hex: str) -> str:
        try:
            return str(await self._rpc("sendrawtransaction", tx_hex))
        except RpcError as exc:
            if exc.rpc_code != RPC_ALREADY_IN_UTXO_SET:
                raise
        # Already confirmed (a retry after a restart): the same transaction, so its txid.
        return str((await self._rpc("decoderawtransaction", tx_hex))["txid"])

    async def tx_confirmations(self, txid: str) -> int | None:
        """As ``ports.Bitcoin``; a transaction that lost to a conflicting one (negative in Core) is None."""
        try:
            tx = await self._wallet_rpc(self._watch, "gettransaction", txid, True)
        except RpcError as exc:
            if exc.rpc_code != RPC_INVALID_ADDRESS_OR_KEY:
                raise
            return None
        confirmations = int(tx["confirmations"])
        return confirmations if confirmations >= 0 else None

    async def send(self, address: str, amount_sat: int) -> str:
        if amount_sat <= 0:
            raise ValidationError({"amount_sat": "more than 0"}, "a payment needs a positive amount")
        wallet = await self._signing_wallet()
        # address, amount, comment, comment_to, subtractfeefromamount=false: the fee comes on top
        return str(await self._wallet_rpc(wallet, "sendtoaddress", address, to_btc(amount_sat), "", "", False))

    async def fund(self, address: str, amount_sat: int) -> tuple[str, str]:
        """As ``ports.Bitcoin``: funded (coins locked), signed and finalized by the signing wallet; not sent."""
        if amount_sat <= 0:
            raise ValidationError({"amount_sat": "more than 0"}, "a payment needs a positive amount")
        wallet = await self._signing_wallet()
        # inputs chosen by the wallet, exact output, locktime 0, the chosen coins locked until broadcast
        funded = await self._wallet_rpc(
            wallet, "walletcreatefundedpsbt", [], [{address: to_btc(amount_sat)}], 0, {"lockUnspents": True}
        )
        signed = await self._wallet_rpc(wallet, "walletprocesspsbt", funded["psbt"], True, "ALL", True, True)
        final = await self.finalize(str(signed["psbt"]))
        if final.hex is None:
            raise WalletError(f"wallet {wallet!r} did not sign the whole payment: check bitcoin_wallet")
        return str((await self._rpc("decoderawtransaction", final.hex))["txid"]), final.hex

    async def tx_block(self, txid: str) -> str | None:
        """As ``ports.Bitcoin``: asks the watch-only wallet, then the signing wallet."""
        for wallet in (self._watch, await self._signing_wallet()):
            try:
                tx = await self._wallet_rpc(wallet, "gettransaction", txid, True)
            except RpcError as exc:
                if exc.rpc_code != RPC_INVALID_ADDRESS_OR_KEY:
                    raise
                continue
            block = tx.get("blockhash")
            return str(block) if block and int(tx.get("confirmations", 0)) > 0 else None
        return None

    async def output_at(self, txid: str, vout: int, block: str) -> tuple[str, int] | None:
        """As ``ports.Bitcoin``; ``Unavailable`` for a block Core does not know (yet): nothing is decided."""
        try:
            header = await self._rpc("getblockheader", block, True)
        except RpcError as exc:
            if exc.rpc_code == RPC_INVALID_PARAMETER:
                return None  # not a block hash at all
            if exc.rpc_code != RPC_INVALID_ADDRESS_OR_KEY:
                raise
            raise Unavailable(f"Bitcoin Core does not know block {block[:80]} yet (still syncing?)") from exc
        if vout < 0 or int(header.get("confirmations", -1)) < 0:
            return None  # a block of a branch that lost: its transactions count for nothing
        try:
            tx = await self._rpc("getrawtransaction", txid, True, block)
        except RpcError as exc:
            if exc.rpc_code not in (RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER):
                raise
            return None  # no such transaction in that block, or not hex at all
        outputs = tx.get("vout") or []
        if tx.get("in_active_chain") is False or vout >= len(outputs):
            return None
        out = outputs[vout]
        address = out.get("scriptPubKey", {}).get("address")
        return (str(address), to_sats(out["value"])) if address else None

    async def mempool_min_fee(self) -> int:
        """``getmempoolinfo`` ``mempoolminfee`` in sat/vB (rounded up)."""
        return sat_per_vb((await self._rpc("getmempoolinfo"))["mempoolminfee"])
