"""A store's onion-service options: invite-only access with client keys, stream limits, PoW.

Pure validation; the market persists the result and tells the publisher.
"""

from __future__ import annotations

import secrets
import time

from ..core import fields as f
from ..core.crypto import ClientAuthKey
from ..core.errors import NotFound, ValidationError
from ..core.models import Client, OnionOptions, PublicClient, PublicOnionOptions, StoreRecord

MAX_CLIENTS = 200  # tor puts every client in the descriptor; keep it well inside its size limit
MAX_STREAMS = 1000


def defaults() -> OnionOptions:
    return OnionOptions(invite_only=False, max_streams=0, pow=False, clients=[], announce=True)


def of_store(record: StoreRecord) -> OnionOptions:
    """The store's options; defaults for what it never set."""
    options: OnionOptions = {**defaults(), **(record.get("onion_service") or defaults())}
    return options


def validate_options(data: object, current: OnionOptions) -> OnionOptions:
    """Merge a partial update of ``invite_only`` / ``max_streams`` / ``pow`` / ``announce`` into ``current``."""
    if not isinstance(data, dict):
        raise ValidationError({"onion_service": "must be a JSON object"})
    merged = {**current, **data}
    errors = f.Errors()
    out = OnionOptions(
        invite_only=f.boolean(merged, "invite_only", errors, default=False),
        max_streams=f.integer(merged, "max_streams", errors, maximum=MAX_STREAMS, default=0),
        pow=f.boolean(merged, "pow", errors, default=False),
        clients=current.get("clients", []),
        announce=f.boolean(merged, "announce", errors, default=True),
    )
    unknown = set(data) - {"invite_only", "max_streams", "pow", "announce"}
    if unknown:
        errors.add(sorted(unknown)[0], "unknown field")
    if errors:
        raise ValidationError(errors)
    return out


def add_client(options: OnionOptions, data: object, *, now: float | None = None) -> tuple[OnionOptions, Client]:
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
    client = Client(
        id=secrets.token_hex(4),
        name=name,
        public=key.public,
        private=key.private,
        created_at=int(now if now is not None else time.time()),
    )
    return {**options, "clients": [*clients, client]}, client


def remove_client(options: OnionOptions, client_id: str) -> OnionOptions:
    clients = [c for c in options.get("clients", []) if c["id"] != client_id]
    if len(clients) == len(options.get("clients", [])):
        raise NotFound(f"no client key {client_id!r} in this store")
    return {**options, "clients": clients}


def public_view(options: OnionOptions) -> PublicOnionOptions:
    """Options without private keys (API listings)."""
    clients = [
        PublicClient(id=c["id"], name=c["name"], public=c["public"], created_at=c["created_at"])
        for c in options.get("clients", [])
    ]
    return {**options, "clients": clients}


def problem(options: OnionOptions) -> str | None:
    """Why this store must not be published right now, or None."""
    if options["invite_only"] and not options["clients"]:
        return "invite-only and no client keys yet: add one on the store's admin page"
    return None
