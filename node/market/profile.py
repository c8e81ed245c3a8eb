"""Store profile validation and its public view."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from ..core import addresses
from ..core import fields as f
from ..core.errors import ValidationError
from ..core.models import MAX_SATS, ModeratorTermsRecord, Policies, Profile, Sats

DISPLAY_UNITS = ("sat", "BTC", "mBTC")
POLICIES = ("shipping", "returns", "terms", "privacy")
TIMEOUT_BLOCKS = (144, 65535)  # the escrow's ``older(N)``: a day at least, BIP68's largest block count at most
ACCEPT_WINDOW = (3600, 30 * 86400)  # seconds: 1 hour .. 30 days
MAX_FEE_PERCENT = 50  # a moderator's fee
MAX_TERMS = 10_000  # characters of one moderator's terms
# Published only when set: a profile without them means the node's settings (and older profiles lack them).
OPTIONAL = ("escrow_timeout_blocks", "accept_window", "moderator_terms")


def name_key(name: str) -> str:
    """What two store names must not share: compared after NFKC, casefold and joined spaces.

    ``Café``, ``CAFÉ`` and ``Cafe`` + a combining accent are one name; so are ``Straße`` and ``STRASSE``.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return " ".join(folded.split())


def _name_problem(name: str) -> str | None:
    """Why a (non-empty) store name cannot be used, or None."""
    if addresses.is_address(name):
        return "cannot be an onion address (a store is looked up by its address first)"
    if name.strip() in (".", ".."):
        return "cannot be '.' or '..' (they are not usable in a URL)"
    return None


def _policies(merged: Mapping[str, object], errors: f.Errors) -> Policies:
    raw = merged.get("policies") or {}
    if not isinstance(raw, dict):
        errors.add("policies", "must be an object")
        raw = {}

    def policy(p: str) -> str:
        return f.text(raw, p, errors, max_len=10_000, multiline=True, field=f"policies.{p}")

    out = Policies(
        shipping=policy("shipping"), returns=policy("returns"), terms=policy("terms"), privacy=policy("privacy")
    )
    for extra in sorted(set(raw) - set(POLICIES)):
        errors.add(f"policies.{extra}", f"unknown policy (known: {', '.join(POLICIES)})")
    return out


def _moderators(merged: Mapping[str, object], errors: f.Errors) -> list[str]:
    moderators = []
    for i, m in enumerate(f.items(merged, "moderators", errors, max_items=20)):
        if not isinstance(m, str) or not addresses.is_address(m):
            errors.add(f"moderators[{i}]", "must be a moderator's onion address")
        else:
            moderators.append(addresses.normalize(m))
    return sorted(set(moderators))


def _optional_int(
    merged: Mapping[str, object], name: str, bounds: tuple[int, int], errors: f.Errors, hint: str
) -> int | None:
    """None (absent, null or "") = the node's setting; else a whole number within ``bounds``."""
    value = merged.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,9}\s*", value):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        errors.add(name, f"must be {hint}, or empty for the node's setting")
        return None
    return value


def _terms_entry(raw: object, field: str, errors: f.Errors) -> ModeratorTermsRecord | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("onion"), str) or not addresses.is_address(raw["onion"]):
        errors.add(field, 'must be {"onion", "fee_percent", "fee_sat", "terms"} with a moderator\'s onion address')
        return None
    percent = f.integer(raw, "fee_percent", errors, maximum=MAX_FEE_PERCENT, default=0, field=f"{field}.fee_percent")
    return ModeratorTermsRecord(
        onion=addresses.normalize(raw["onion"]),
        fee_percent=percent,
        fee_sat=Sats(f.integer(raw, "fee_sat", errors, maximum=MAX_SATS, default=0, field=f"{field}.fee_sat")),
        terms=f.text(raw, "terms", errors, max_len=MAX_TERMS, multiline=True, field=f"{field}.terms"),
    )


def _moderator_terms(
    merged: Mapping[str, object], moderators: list[str], errors: f.Errors
) -> list[ModeratorTermsRecord]:
    """The published terms of accepted moderators only, in the order of ``moderators``, one per onion.

    Terms of a moderator no longer accepted are dropped (the list follows ``moderators``).
    """
    found: dict[str, ModeratorTermsRecord] = {}
    for i, raw in enumerate(f.items(merged, "moderator_terms", errors, max_items=20)):
        entry = _terms_entry(raw, f"moderator_terms[{i}]", errors)
        if entry is not None:
            found.setdefault(entry["onion"], entry)
    return [found[m] for m in moderators if m in found]


def _add_escrow_terms(out: Profile, merged: Mapping[str, object], errors: f.Errors) -> None:
    """The optional escrow keys, only when given or set before (so older profiles and catalogs stay as they were)."""
    blocks = _optional_int(
        merged, "escrow_timeout_blocks", TIMEOUT_BLOCKS, errors, "a number of blocks from 144 to 65535"
    )
    window = _optional_int(merged, "accept_window", ACCEPT_WINDOW, errors, "from 1 hour to 30 days (3600..2592000 s)")
    terms = _moderator_terms(merged, out["moderators"], errors)
    # A key once set stays, as null / [] when cleared: the stored profile is updated key by key.
    if blocks is not None or "escrow_timeout_blocks" in merged:
        out["escrow_timeout_blocks"] = blocks
    if window is not None or "accept_window" in merged:
        out["accept_window"] = window
    if terms or "moderator_terms" in merged:
        out["moderator_terms"] = terms


def validate(data: object, *, partial: Profile | None = None) -> Profile:
    """Clean a profile; with ``partial`` (the current profile) missing keys keep their value."""
    if not isinstance(data, dict):
        raise ValidationError({"profile": "must be a JSON object"})
    merged: dict[str, object] = {**(partial or {}), **data}
    policies_given = merged.get("policies")
    if isinstance(policies_given, dict) and partial:
        merged["policies"] = {**partial.get("policies", {}), **policies_given}
    errors = f.Errors()
    policies = _policies(merged, errors)
    moderators = _moderators(merged, errors)
    name = f.text(merged, "name", errors, max_len=80, required=True)
    if name and (problem := _name_problem(name)):
        errors.add("name", problem)
    out = Profile(
        name=name,
        description=f.text(merged, "description", errors, max_len=2_000, multiline=True),
        policies=policies,
        moderators=moderators,
        vacation=f.boolean(merged, "vacation", errors, default=False),
        display_unit=f.choice(merged, "display_unit", errors, DISPLAY_UNITS),
    )
    _add_escrow_terms(out, merged, errors)
    unknown = set(data) - set(out) - set(OPTIONAL)
    if unknown:
        errors.add(sorted(unknown)[0], "unknown field")
    if errors:
        raise ValidationError(errors)
    return out
