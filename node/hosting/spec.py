"""What tor should publish for one store, or why it must not be published (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.models import OnionSpec, StoreRecord
from . import client_auth


@dataclass(frozen=True)
class Unpublishable:
    """Why a store's onion is withheld; the operator can act on ``reason``."""

    reason: str


def onion_spec(record: StoreRecord, key_blob: str, target: str) -> OnionSpec | Unpublishable:
    """The store's onion service from its record, its ADD_ONION key blob and where its listener is."""
    options = client_auth.of_store(record)
    problem = client_auth.problem(options)
    if problem:
        return Unpublishable(problem)
    return OnionSpec(
        key_blob=key_blob,
        target=target,
        client_keys=tuple(c["public"] for c in options["clients"]) if options["invite_only"] else (),
        max_streams=options["max_streams"],
        pow=options["pow"],
    )
