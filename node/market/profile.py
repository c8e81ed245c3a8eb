"""Store profile validation and its public view."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from ..core import addresses
from ..core import fields as f
from ..core.errors import ValidationError
from ..core.models import Policies, Profile

DISPLAY_UNITS = ("sat", "BTC", "mBTC")
POLICIES = ("shipping", "returns", "terms", "privacy")


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
    unknown = set(data) - set(out)
    if unknown:
        errors.add(sorted(unknown)[0], "unknown field")
    if errors:
        raise ValidationError(errors)
    return out
