"""Adapters: the only modules that touch tinydb, stem, bitcoinrpc or sockets."""
