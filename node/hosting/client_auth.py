"""A store's onion-service options: invite-only access with client keys, stream limits, PoW.

Pure validation; the market persists the result and tells the publisher.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from ..core import fields as f
from ..core.crypto import ClientAuthKey
from ..core.errors import NotFound, ValidationError

MAX_CLIENTS = 200  # tor puts every client in the descriptor; keep it well inside its size limit
MAX_STREAMS = 1000


def defaults() -> dict[str, Any]:
    return {"invite_only": False, "max_streams": 0, "pow": False, "clients": []}


def validate_options(data: Any, current: dict[str, Any]) -> dict[str, Any]:
    """Merge a partial update of ``invite_only`` / ``max_streams`` / ``pow`` into ``current``."""
    if not isinstance(data, dict):
        raise ValidationError({"onion_service": "must be a JSON object"})
    merged = {**current, **data}
    errors = f.Errors()
    out = {
        "invite_only": f.boolean(merged, "invite_only", errors, default=False),
        "max_streams": f.integer(merged, "max_streams", errors, maximum=MAX_STREAMS, default=0),
        "pow": f.boolean(merged, "pow", errors, default=False),
        "clients": current.get("clients", []),
    }
    unknown = set(data) - {"invite_only", "max_streams", "pow"}
    if unknown:
        errors.add(sorted(unknown)[0], "unknown field")
    if errors:
        raise ValidationError(errors)
    return out


Options = dict[str, Any]


def add_client(options: Options, data: Any, *, now: float | None = None) -> tuple[Options, dict[str, Any]]:
    """A new client key named by ``data["name"]``; returns (options, the new client)."""
    if not isinstance(data, dict):
        raise ValidationError({"client": "must be a JSON object"})
    errors = f.Errors()
    name = f.text(data, "name", errors, max_len=60, required=True)
    clients = list(options.get("clients", []))
    if len(clients) >= MAX_CLIENTS:
        errors.add("name", f"a store can have at most {MAX_CLIENTS} client keys; remove unused ones first")
    if any(c["name"].casefold() == name.casefold() for c in clients):
        errors.add("name", "another client key has this name")
    if set(data) - {"name"}:
        errors.add(sorted(set(data) - {"name"})[0], "unknown field")
    if errors:
        raise ValidationError(errors)
    key = ClientAuthKey.generate()
    client = {
        "id": secrets.token_hex(4),
        "name": name,
        "public": key.public,
        "private": key.private,
        "created_at": int(now if now is not None else time.time()),
    }
    return {**options, "clients": [*clients, client]}, client


def remove_client(options: dict[str, Any], client_id: str) -> dict[str, Any]:
    clients = [c for c in options.get("clients", []) if c["id"] != client_id]
    if len(clients) == len(options.get("clients", [])):
        raise NotFound(f"no client key {client_id!r} in this store")
    return {**options, "clients": clients}


def public_view(options: dict[str, Any]) -> dict[str, Any]:
    """Options without private keys (API listings)."""
    clients = [{k: c[k] for k in ("id", "name", "public", "created_at")} for c in options.get("clients", [])]
    return {**options, "clients": clients}


def problem(options: dict[str, Any]) -> str | None:
    """Why this store must not be published right now, or None."""
    if options["invite_only"] and not options["clients"]:
        return "invite-only and no client keys yet: add one on the store's admin page"
    return None
