"""Domain: stores, listings, catalogs. No web, tinydb, stem or bitcoinrpc imports."""
