"""Schema of ``moderation.sqlite``: this node's moderation offer, its cases, and the messages it has answered.

SQL text only; the queries live in ``node/payments/moderation_store.py`` and
run through the ``ports.Database`` port. A released migration is never edited.

- ``settings``: one row (id 1): the offer (enabled, fees, terms).
- ``cases``: one per (store, order) that got a key; ``record`` is the case as
  canonical JSON (``node/payments/codec.py``), ``state`` repeated for listing,
  ``created_at`` indexed for the per-store and whole-node limits on new cases.
- ``seen``: each answered envelope by (signer, seq), with the digest of the
  envelope and the answer given, kept until the envelope expires: the same
  envelope sent again gets the same answer, another one reusing the seq is
  refused.
"""

from __future__ import annotations

from .sqlite_schema import Migration

_V1 = """
CREATE TABLE settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    fee_percent INTEGER NOT NULL CHECK (fee_percent BETWEEN 0 AND 50),
    fee_sat INTEGER NOT NULL CHECK (fee_sat >= 0),
    terms TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE cases (
    id TEXT PRIMARY KEY,
    store TEXT NOT NULL,
    order_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    record TEXT NOT NULL,
    UNIQUE (store, order_id)
) STRICT;
CREATE INDEX cases_state ON cases (state, updated_at);
CREATE INDEX cases_created ON cases (store, created_at);
CREATE INDEX cases_created_all ON cases (created_at);

CREATE TABLE seen (
    signer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    digest TEXT NOT NULL,
    answer TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (signer, seq)
) STRICT;
CREATE INDEX seen_expiry ON seen (expires_at);
"""

MIGRATIONS: tuple[Migration, ...] = (Migration(1, "moderation tables", _V1),)
