"""A private Tor network on 127.0.0.1 for end-to-end tests and ``pasar testnet``."""

from .network import ClientTor, TestNet
from .tools import TestNetError, local_only

__all__ = ["ClientTor", "TestNet", "TestNetError", "local_only"]
