"""Which refusals of Bitcoin Core the adapter handles: answers it expects, not errors (``BitcoinCore.errors``).

``pasar_bitcoin_rpc_errors_total`` counts the RPCs that failed for the node: no answer, or a refusal the
adapter does not turn into a normal result. These refusals it does handle, so they are not counted:
a wallet Core unloaded (loaded again, the call repeated), ``loadwallet``/``createwallet`` of a wallet already
there, "not in this wallet" (``gettransaction``: unknown), "not a block/transaction" (``output_at``: none),
an already-confirmed rebroadcast, a bad descriptor or PSBT (the caller's form error), and "rescanning"
(``importdescriptors`` waits for another import's rescan, bounded: past that bound the checkout fails).
"""

from __future__ import annotations

from .bitcoin_codec import (
    RPC_ALREADY_IN_UTXO_SET,
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_WALLET_ALREADY_EXISTS,
    RPC_WALLET_ALREADY_LOADED,
    RPC_WALLET_ERROR,
    RPC_WALLET_NOT_FOUND,
    RpcError,
)

RPC_INVALID_PARAMETER = -8
HANDLED: dict[str, frozenset[int]] = {
    # ``_load`` counts the one case it does not handle: no such wallet, other than the watch-only one.
    "loadwallet": frozenset({RPC_WALLET_ALREADY_LOADED, RPC_WALLET_NOT_FOUND}),
    "createwallet": frozenset({RPC_WALLET_ALREADY_EXISTS, RPC_WALLET_ALREADY_LOADED}),
    "gettransaction": frozenset({RPC_INVALID_ADDRESS_OR_KEY}),
    "getblockheader": frozenset({RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER}),
    "getrawtransaction": frozenset({RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER}),
    "sendrawtransaction": frozenset({RPC_ALREADY_IN_UTXO_SET}),
    "getdescriptorinfo": frozenset({RPC_INVALID_ADDRESS_OR_KEY}),
    "decodepsbt": frozenset({RPC_DESERIALIZATION_ERROR}),
}


def handled(method: str, exc: RpcError, wallet: str | None) -> bool:
    """Whether the adapter handles this refusal of ``method`` (made in ``wallet``, None for a node RPC)."""
    if exc.rpc_code in HANDLED.get(method, frozenset()):
        return True
    if wallet is not None and exc.rpc_code == RPC_WALLET_NOT_FOUND:
        return True  # the wallet is loaded and the call made again
    return method == "importdescriptors" and exc.rpc_code == RPC_WALLET_ERROR and "rescanning" in exc.core_message
