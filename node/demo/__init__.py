"""``pasar demo``: a whole market on 127.0.0.1 (private Tor network, regtest bitcoind, five nodes)."""

from .market import down, status, up
from .state import REGISTRY, DemoError, NodeInfo, Proc, State

__all__ = ["REGISTRY", "DemoError", "NodeInfo", "Proc", "State", "down", "status", "up"]
