"""The moderator's records in ``moderation.sqlite`` (schema: ``node/adapters/moderation_schema.py``).

Settings (the offer), cases (one per order this node holds a key for) and the
replay memory of answered envelopes. Every write is one transaction through
``ports.Database.execute_write_fn``.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from enum import StrEnum

from ..core import ports
from ..core.errors import NotFound
from ..core.models import Envelope, Sats
from . import codec
from .models import Escrow, Order, Party

_NO_SATS = Sats(0)


@dataclass(frozen=True)
class ModerationSettings:
    """The moderation offer of this node (admin setting; ``PATCH /api/v1/moderation``)."""

    enabled: bool = False
    fee_percent: int = 0  # 0..50, of the order amount
    fee_sat: Sats = _NO_SATS  # fixed part
    terms: str = ""


class CaseState(StrEnum):
    OPEN = "open"  # key given, escrow watched
    REFUND_SIGNED = "refund_signed"  # not accepted in time: the moderator signed the refund to the buyer
    DISPUTED = "disputed"  # statements received: the operator decides
    DECIDED = "decided"  # the operator decided; the split PSBT carries the moderator's signature


# Cases this node may still act on (sight the funding, sign a refund again, decide): a decided one is final.
ACTIVE = (CaseState.OPEN, CaseState.REFUND_SIGNED, CaseState.DISPUTED)


@dataclass(frozen=True)
class Case:
    """One order this node moderates, as its operator sees it."""

    id: str
    store: str  # the vendor's store onion
    order_id: str
    state: CaseState
    created_at: int
    updated_at: int
    network: str
    amount_sat: Sats
    refund_address: str  # the buyer's, from the key request
    escrow: Escrow  # built and checked with this node's Core, watched by its watch-only wallet
    fee_percent: int  # the offer when the key was given
    fee_sat: Sats
    terms_hash: str
    moderator_sat: Sats  # this node's fee for the order: fee_sat + amount * fee_percent / 100
    accept_by: int | None = None  # as the vendor's refund request named it (never trusted alone)
    accept_window: int | None = None  # seconds the vendor declared at key-request time to accept a paid order
    funded_at: int | None = None  # when this node's watch-only wallet first saw the escrow funded
    refund_signed_at: int | None = None  # when this node signed the refund to the buyer
    opened_by: Party | None = None
    disputed_at: int | None = None
    statements: tuple[tuple[Party, str], ...] = ()
    vendor_address: str | None = None  # where the vendor's part of a split goes
    order: Order | None = None  # the order record the vendor sent with the dispute
    buyer_sat: Sats | None = None  # the decision
    vendor_sat: Sats | None = None
    decided_at: int | None = None
    psbt: str | None = None  # base64, signed by this node: the refund or the split
    fee_rate: int | None = None  # sat/vB the split was planned with
    moderator_address: str | None = None  # this node's fee output of the split (None: no fee output)
    note: str = ""  # e.g. an output dropped as dust

    @property
    def paid_sat(self) -> Sats | None:
        return None if self.order is None else self.order.funding.paid_sat


@dataclass(frozen=True)
class Seen:
    digest: str
    answer: Envelope


def _case(row: ports.SqlRow) -> Case:
    return codec.from_plain(Case, json.loads(row["record"]), "case")


class ModerationStore:
    def __init__(self, db: ports.Database) -> None:
        self._db = db

    async def settings(self) -> ModerationSettings:
        rows = await self._db.execute("SELECT enabled, fee_percent, fee_sat, terms FROM settings WHERE id = 1")
        if not rows:
            return ModerationSettings()
        row = rows[0]
        return ModerationSettings(bool(row["enabled"]), row["fee_percent"], Sats(row["fee_sat"]), row["terms"])

    async def put_settings(self, s: ModerationSettings, *, now: int) -> None:
        def write(conn: ports.SqlConnection) -> None:
            conn.execute(
                "INSERT INTO settings (id, enabled, fee_percent, fee_sat, terms, updated_at) VALUES (1, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET enabled = excluded.enabled, fee_percent = excluded.fee_percent, "
                "fee_sat = excluded.fee_sat, terms = excluded.terms, updated_at = excluded.updated_at",
                (int(s.enabled), s.fee_percent, s.fee_sat, s.terms, now),
            )

        await self._db.execute_write_fn(write)

    # -- cases -----------------------------------------------------------------------------------
    async def case(self, case_id: str) -> Case:
        rows = await self._db.execute("SELECT record FROM cases WHERE id = ?", (case_id,))
        if not rows:
            raise NotFound(f"no moderation case {case_id!r} on this node: see the list of disputes")
        return _case(rows[0])

    async def case_for(self, store: str, order_id: str) -> Case | None:
        rows = await self._db.execute("SELECT record FROM cases WHERE store = ? AND order_id = ?", (store, order_id))
        return _case(rows[0]) if rows else None

    async def cases(self, states: tuple[CaseState, ...] = (), *, limit: int = 500) -> list[Case]:
        if states:
            sql = (
                "SELECT record FROM cases WHERE state IN (SELECT value FROM json_each(?)) "
                "ORDER BY updated_at DESC LIMIT ?"
            )
            rows = await self._db.execute(sql, (json.dumps([s.value for s in states]), limit))
        else:
            rows = await self._db.execute("SELECT record FROM cases ORDER BY updated_at DESC LIMIT ?", (limit,))
        return [_case(r) for r in rows]

    async def active_cases(self, *, page: int = 500) -> list[Case]:
        """Every case not final (``ACTIVE``), newest first, read ``page`` rows at a time: no cap."""
        sql = (
            "SELECT record, created_at, id FROM cases WHERE state IN (SELECT value FROM json_each(?)) "
            "AND (created_at < ? OR (created_at = ? AND id < ?)) ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        states = json.dumps([s.value for s in ACTIVE])
        found: list[Case] = []
        after: tuple[int, str] = (2**62, "")
        while rows := await self._db.execute(sql, (states, after[0], after[0], after[1], page)):
            found += [_case(r) for r in rows]
            after = (int(rows[-1]["created_at"]), str(rows[-1]["id"]))
        return found

    async def unfunded(self, since: int, *, limit: int = 1000) -> list[Case]:
        """Open cases created at or after ``since`` whose escrow this node has not seen funded yet, oldest first."""
        sql = (
            "SELECT record FROM cases WHERE state = ? AND created_at >= ? "
            "AND json_extract(record, '$.funded_at') IS NULL ORDER BY created_at LIMIT ?"
        )
        rows = await self._db.execute(sql, (CaseState.OPEN.value, since, limit))
        return [_case(r) for r in rows]

    async def recent_cases(self, store: str | None, since: int) -> int:
        """How many cases ``store`` (None: every store) opened at or after ``since``."""
        if store is None:
            rows = await self._db.execute("SELECT count(*) FROM cases WHERE created_at >= ?", (since,))
        else:
            sql = "SELECT count(*) FROM cases WHERE store = ? AND created_at >= ?"
            rows = await self._db.execute(sql, (store, since))
        return int(rows[0][0])

    async def insert_case(self, case: Case) -> Case:
        """Stores a new case; when one exists for that (store, order), that one (nothing written)."""

        def write(conn: ports.SqlConnection) -> Case:
            row = conn.execute(
                "SELECT record FROM cases WHERE store = ? AND order_id = ?", (case.store, case.order_id)
            ).fetchone()
            if row is not None:
                return _case(row)
            conn.execute(
                "INSERT INTO cases (id, store, order_id, state, created_at, updated_at, record) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (case.id, case.store, case.order_id, case.state.value, case.created_at, case.updated_at, _json(case)),
            )
            return case

        return await self._db.execute_write_fn(write)

    async def update_case(self, case: Case, *, expect: CaseState) -> Case:
        """Writes ``case`` if the stored one is still in state ``expect``; else the stored one (the caller
        compares: a concurrent change won)."""

        def write(conn: ports.SqlConnection) -> Case:
            row = conn.execute("SELECT record, state FROM cases WHERE id = ?", (case.id,)).fetchone()
            if row is None:
                raise NotFound(f"no moderation case {case.id!r} on this node")
            if row["state"] != expect.value:
                return _case(row)
            conn.execute(
                "UPDATE cases SET state = ?, updated_at = ?, record = ? WHERE id = ?",
                (case.state.value, case.updated_at, _json(case), case.id),
            )
            return case

        return await self._db.execute_write_fn(write)

    # -- replay memory ---------------------------------------------------------------------------
    async def seen(self, signer: str, seq: int) -> Seen | None:
        rows = await self._db.execute("SELECT digest, answer FROM seen WHERE signer = ? AND seq = ?", (signer, seq))
        if not rows:
            return None
        return Seen(rows[0]["digest"], typing.cast(Envelope, json.loads(rows[0]["answer"])))

    async def remember(self, request: Envelope, digest: str, answer: Envelope, *, now: int) -> Seen:
        """Records the answer to ``request``; when a concurrent copy was recorded first, that one."""

        def write(conn: ports.SqlConnection) -> Seen:
            conn.execute("DELETE FROM seen WHERE expires_at < ?", (now,))
            conn.execute(
                "INSERT INTO seen (signer, seq, digest, answer, expires_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (signer, seq) DO NOTHING",
                (request["store"], request["seq"], digest, codec.canonical(answer), request["expires_at"]),
            )
            row = conn.execute(
                "SELECT digest, answer FROM seen WHERE signer = ? AND seq = ?", (request["store"], request["seq"])
            ).fetchone()
            return Seen(row["digest"], typing.cast(Envelope, json.loads(row["answer"])))

        return await self._db.execute_write_fn(write)


def _json(case: Case) -> str:
    return codec.canonical(codec.to_plain(case))
