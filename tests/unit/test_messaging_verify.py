"""The inbox's fast check gives ``envelope.open_``'s verdicts (same accept/refuse, same error class)."""

from __future__ import annotations

import copy

import pytest

from node.core import crypto, envelope
from node.core.crypto import StoreKey
from node.core.errors import SignatureError, ValidationError
from node.messaging import verify, wire

NOW = 1_780_000_000
KEY = StoreKey(bytes(range(32)))  # fixed: parametrize ids must match in every xdist worker


def good() -> dict:
    body = wire.message_body(wire.new_message_id(), wire.new_order_id(), "message", KEY.onion, {"text": "hi"})
    return dict(envelope.seal(KEY, wire.MSG_TYPE, body, seq=2, issued_at=NOW, expires_at=NOW + 100))


def resigned(env: dict) -> dict:
    unsigned = {k: v for k, v in env.items() if k != "sig"}
    return {**env, "sig": crypto.b64url_encode(KEY.sign(crypto.canonical_json(unsigned)))}


def _mutations() -> list[tuple[str, object]]:
    g = good()
    cases: list[tuple[str, object]] = [("good", g), ("not a dict", [g]), ("none", None)]
    cases.append(("missing sig", {k: v for k, v in g.items() if k != "sig"}))
    cases.append(("extra field", {**g, "x": 1}))
    for name, value in [
        ("v", 2),
        ("v", True),
        ("seq", -1),
        ("seq", "2"),
        ("issued_at", 1.5),
        ("expires_at", None),
        ("type", 5),
        ("type", "pasar.ack"),
        ("store", KEY.onion.upper()),
        ("store", "a" * 56),
        ("store", StoreKey(bytes(range(1, 33))).onion),
        ("sig", "!!"),
        ("sig", "AAAA"),
        ("sig", 7),
        ("body", []),
        ("body", {"id": 1.5}),
        ("body", {1: 2}),
        ("expires_at", NOW - 1),
        ("issued_at", NOW + 301),
        ("expires_at", NOW - 10),
    ]:
        cases.append((f"{name}={value!r}", {**g, name: value}))
    deep: object = "x"
    for _ in range(40):
        deep = [deep]
    cases.append(("deep body", resigned({**g, "body": {**g["body"], "deep": deep}})))
    cases.append(("float body resigned", resigned({**g, "body": {**g["body"], "f": 1.5}})))
    tampered = copy.deepcopy(g)
    tampered["body"]["text"] = "ho"
    cases.append(("tampered", tampered))
    cases.append(("expired resigned", resigned({**g, "issued_at": NOW - 200, "expires_at": NOW - 100})))
    cases.append(("future resigned", resigned({**g, "issued_at": NOW + 400, "expires_at": NOW + 500})))
    cases.append(("backwards resigned", resigned({**g, "issued_at": NOW + 50, "expires_at": NOW + 10})))
    cases.append(("other type resigned", resigned({**g, "type": "pasar.catalog"})))
    return cases


@pytest.mark.parametrize(("name", "env"), _mutations(), ids=[n for n, _ in _mutations()])
def test_same_verdict_as_envelope_open(name: str, env: object) -> None:
    def outcome(fn) -> object:
        try:
            fn()
        except (ValidationError, SignatureError) as exc:
            return type(exc)
        return "ok"

    core = outcome(lambda: envelope.open_(copy.deepcopy(env), now=NOW, expected_type=wire.MSG_TYPE))
    fast = outcome(lambda: verify.open_message(copy.deepcopy(env), now=NOW))
    assert fast == core
    if core == "ok":
        opened, raw = verify.open_message(env, now=NOW)
        assert opened == envelope.open_(env, now=NOW) and raw == crypto.canonical_json(env)
