"""Shared foundation: errors, settings, crypto, signed envelopes, onion addresses, typed models."""
