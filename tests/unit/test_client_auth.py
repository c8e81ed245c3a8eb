"""Invite-only access, client keys and onion-service limits (pure validation)."""

from __future__ import annotations

import base64

import nacl.public
import pytest

from node.core.errors import NotFound, ValidationError
from node.hosting import client_auth


def b32decode(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8))


def test_client_keys_are_x25519_pairs_in_tor_format():
    options, client = client_auth.add_client(client_auth.defaults(), {"name": "alice"}, now=1000)
    assert len(client["public"]) == len(client["private"]) == 52 and client["public"].isupper()
    private = nacl.public.PrivateKey(b32decode(client["private"]))
    assert bytes(private.public_key) == b32decode(client["public"])
    assert options["clients"] == [client] and client["created_at"] == 1000
    assert "private" not in client_auth.public_view(options)["clients"][0]


def test_client_names_are_required_and_unique():
    options, _ = client_auth.add_client(client_auth.defaults(), {"name": "alice"})
    for data, field in (({"name": "ALICE"}, "name"), ({"name": ""}, "name"), ({"name": "x", "key": "y"}, "key")):
        with pytest.raises(ValidationError) as err:
            client_auth.add_client(options, data)
        assert field in err.value.fields
    with pytest.raises(ValidationError):
        client_auth.add_client(options, ["alice"])


def test_client_count_is_bounded():
    options = client_auth.defaults()
    options["clients"] = [{"id": str(i), "name": f"c{i}"} for i in range(client_auth.MAX_CLIENTS)]
    with pytest.raises(ValidationError, match="at most"):
        client_auth.add_client(options, {"name": "one more"})


def test_removing_clients():
    options, client = client_auth.add_client(client_auth.defaults(), {"name": "bob"})
    assert client_auth.remove_client(options, client["id"])["clients"] == []
    with pytest.raises(NotFound):
        client_auth.remove_client(options, "nope")


def test_options_merge_and_check():
    current = client_auth.defaults()
    merged = client_auth.validate_options({"max_streams": "20"}, current)
    assert merged == {**current, "max_streams": 20}
    for bad in ({"max_streams": 5000}, {"max_streams": -1}, {"max_streams": 1.5}, {"pow": "maybe"}, {"colour": 1}):
        with pytest.raises(ValidationError):
            client_auth.validate_options(bad, current)


def test_an_invite_only_store_without_keys_is_not_published():
    options = client_auth.validate_options({"invite_only": True}, client_auth.defaults())
    assert "no client keys" in (client_auth.problem(options) or "")
    options, _ = client_auth.add_client(options, {"name": "carol"})
    assert client_auth.problem(options) is None
