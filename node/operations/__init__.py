"""Every admin operation, declared once (HWI's ``commands.py`` is the model).

An ``Operation`` names the call, its HTTP method and path under ``/api/v1``,
its input (a dataclass: fields named in the path are path parameters, a
``body`` field is the JSON body, a ``data`` field the raw body), its output
and the domain call. ``web/api.py`` derives one route per entry of ``TABLE``;
the CLI's local backend runs ``call`` on a Market opened on the data
directory and its remote backend sends the same request to the running
node's admin API (``cli/backends.py``).

What differs between the running node and the CLI working on the data
directory (a store's listener and status, tor) is the ``Context``.
Adding an operation: its input, output and call in the module of its kind
(``stores``, ``listings``, ``info``, ``discovery``, ``payments``, ``purchases``), and its entry in that module's
``OPERATIONS``; a new kind is a new module and one more line in ``TABLE``.
"""

from __future__ import annotations

from typing import Any

from . import discovery, info, listings, payments, purchases, stores
from .base import PREFIX, Context, NoInput, Operation, TorView

TABLE: tuple[Operation[Any, Any], ...] = (
    *stores.OPERATIONS, *listings.OPERATIONS, *info.OPERATIONS, *discovery.OPERATIONS, *payments.OPERATIONS,
    *purchases.OPERATIONS,
)  # fmt: skip
BY_NAME = {op.name: op for op in TABLE}

__all__ = [
    "BY_NAME", "PREFIX", "TABLE", "Context", "NoInput", "Operation", "TorView", "discovery", "info", "listings",
    "payments", "purchases", "stores",
]  # fmt: skip
