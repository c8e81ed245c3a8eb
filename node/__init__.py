"""Pasar: a peer-to-peer marketplace node."""

__version__ = "0.1.0"
