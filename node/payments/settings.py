"""The payment settings the service reads (declared once in ``node/core/config.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.config import Config


@dataclass(frozen=True)
class PaymentSettings:
    network: str = "regtest"  # "main" | "test" | "signet" | "regtest" (the ``bitcoin_network`` setting)
    timeout_blocks: int = 6480  # N of the vendor's timeout path ``older(N)``
    confirmations: int = 1  # before the vendor is told to ship
    payment_window: int = 7200  # seconds an order may stay unpaid
    accept_window: int = 3 * 86400  # seconds the vendor has to accept a paid order
    poll_interval: float = 5.0  # seconds between watcher rounds
    max_fee_rate: int = 500  # sat/vB: a payout paying more is refused before signing
    enabled: bool = True  # the ``payments`` setting: False = no checkout at all
    offer_ttl: int = 600  # seconds a moderator's offer is cached for the checkout form
    max_unpaid: int = 50  # unpaid orders one store holds at once (each reserves stock and an escrow key)
    status_ttl: int = 5  # seconds the "paused?" answer is cached (one RPC per page otherwise)

    @classmethod
    def from_config(cls, config: Config) -> PaymentSettings:
        return cls(
            network=config.bitcoin_network,
            timeout_blocks=config.escrow_timeout_blocks,
            confirmations=config.confirmations,
            payment_window=config.payment_window,
            accept_window=config.accept_window,
            poll_interval=config.payment_poll_interval,
            max_fee_rate=config.max_fee_rate,
            enabled=config.payments,
            max_unpaid=config.max_unpaid_orders,
        )
