"""Onion services for stores: publishing through tor, client authorization."""
