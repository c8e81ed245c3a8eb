"""Adapters: the only modules that touch tinydb, sqlite3, stem, bitcoinrpc, subprocesses or sockets.

Each one stands behind a Protocol in ``node/core/ports.py``; features get them passed in.
"""
