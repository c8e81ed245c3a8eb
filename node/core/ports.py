"""Ports: the Protocols domain code depends on, one per adapter.

Features receive adapters typed by these Protocols, never the concrete
classes, so unit tests pass small fakes without ``# type: ignore``. Each
adapter in ``node/adapters`` satisfies its Protocol (checked by mypy where
the app passes it in).
"""

from __future__ import annotations
