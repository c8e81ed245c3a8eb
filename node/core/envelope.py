"""The signed envelope: Pasar's wire format for every signed object.

See docs/protocol.md. Verification order: shape, signature, freshness; callers
that store messages dedupe by (type, store, seq) after this.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from . import addresses, crypto
from .errors import SignatureError, ValidationError
from .models import Envelope

VERSION = 1
# Clock skew tolerated between nodes for ``issued_at`` in the future.
MAX_SKEW = 300
MAX_DEPTH = 32
_ADDRESS = re.compile(r"[a-z2-7]{56}")
_FIELDS = {"type", "v", "store", "seq", "issued_at", "expires_at", "body", "sig"}


def seal(
    key: crypto.StoreKey,
    type_: str,
    body: Mapping[str, object],
    *,
    seq: int,
    issued_at: int,
    expires_at: int,
) -> Envelope:
    """Sign ``body`` as ``key``'s store; returns the complete envelope."""
    if expires_at <= issued_at:
        raise ValueError("expires_at must be after issued_at")
    unsigned = {
        "type": type_,
        "v": VERSION,
        "store": key.onion,
        "seq": seq,
        "issued_at": issued_at,
        "expires_at": expires_at,
        "body": body,
    }
    sig = crypto.b64url_encode(key.sign(crypto.canonical_json(unsigned)))
    return Envelope(
        type=type_, v=VERSION, store=key.onion, seq=seq, issued_at=issued_at, expires_at=expires_at, body=body, sig=sig
    )


def _check_shape(env: Any) -> None:
    if not isinstance(env, dict):
        raise ValidationError({"envelope": "must be a JSON object"})
    missing = _FIELDS - env.keys()
    extra = env.keys() - _FIELDS
    problems: dict[str, str] = {f: "missing" for f in missing}
    problems.update({f: "unknown field" for f in extra})
    for name in ("v", "seq", "issued_at", "expires_at"):
        value = env.get(name)
        if name in env and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            problems[name] = "must be a non-negative integer"
    for name in ("type", "store", "sig"):
        if name in env and not isinstance(env[name], str):
            problems[name] = "must be a string"
    if "body" in env and not isinstance(env["body"], dict):
        problems["body"] = "must be an object"
    if problems:
        raise ValidationError(problems, "malformed envelope")
    if env["v"] != VERSION:
        raise ValidationError({"v": f"unsupported envelope version {env['v']}"})
    if not _ADDRESS.fullmatch(env["store"]) or not addresses.is_address(env["store"]):
        raise ValidationError({"store": "must be a v3 onion address: 56 lower-case characters, no .onion"})
    problem = _json_problem(env["body"], 0)
    if problem:
        raise ValidationError({"body": problem})


def _json_problem(value: Any, depth: int) -> str | None:
    """Bodies hold objects, arrays, strings, integers, booleans and null only."""
    if depth > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return "object keys must be strings"
        return next((p for p in (_json_problem(v, depth + 1) for v in value.values()) if p), None)
    if isinstance(value, list):
        return next((p for p in (_json_problem(v, depth + 1) for v in value) if p), None)
    if value is None or isinstance(value, str | int | bool):
        return None
    return f"{type(value).__name__} values are not allowed (money is integer satoshis)"


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValidationError({"envelope": "an object repeats a key"})
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValidationError({"envelope": f"{name} is not JSON"})


def loads(data: bytes | str) -> Any:
    """Parse received envelope JSON strictly: no repeated keys, no NaN/Infinity."""
    try:
        return json.loads(data, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError({"envelope": "not valid JSON"}) from None


def check_signed(env: Mapping[str, Any], unsigned: bytes, *, now: int, what: str = "envelope") -> None:
    """Signature (over ``unsigned``, the canonical bytes without ``sig``), then freshness; SignatureError."""
    try:
        sig = crypto.b64url_decode(env["sig"])
    except ValueError:
        raise SignatureError("signature is not canonical unpadded base64url") from None
    if len(sig) != 64:
        raise SignatureError("an ed25519 signature is 64 bytes")
    crypto.verify(env["store"], unsigned, sig)
    if env["issued_at"] > now + MAX_SKEW:
        raise SignatureError(f"{what} is issued in the future (check the clock)")
    if env["expires_at"] <= now:
        raise SignatureError(f"{what} has expired")
    if env["expires_at"] <= env["issued_at"]:
        raise SignatureError(f"{what} expires before it is issued")


def open_(env: Any, *, now: int, expected_type: str | None = None) -> Envelope:
    """Verify an envelope and return it; raises ValidationError/SignatureError."""
    _check_shape(env)
    if expected_type is not None and env["type"] != expected_type:
        raise ValidationError({"type": f"expected {expected_type!r}, got {env['type']!r}"})
    unsigned = {k: v for k, v in env.items() if k != "sig"}
    check_signed(env, crypto.canonical_json(unsigned), now=now)
    return typed(env)


def typed(env: Mapping[str, Any]) -> Envelope:
    """The ``Envelope`` record of a checked envelope's fields (its shape already verified)."""
    return Envelope(
        type=env["type"],
        v=env["v"],
        store=env["store"],
        seq=env["seq"],
        issued_at=env["issued_at"],
        expires_at=env["expires_at"],
        body=env["body"],
        sig=env["sig"],
    )
