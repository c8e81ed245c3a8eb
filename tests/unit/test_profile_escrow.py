"""A store profile's escrow terms (timeout N, accept window) and its moderators' published terms."""

from __future__ import annotations

from typing import Any

import pytest

from node.core.addresses import address_from_pubkey
from node.core.errors import ValidationError
from node.core.models import ModeratorTermsRecord, Profile, Sats
from node.market import profile as P
from node.payments.checkout import store_terms
from node.payments.models import ModeratorOffer
from node.payments.service import merged_terms, terms_record
from node.payments.settings import PaymentSettings
from node.web.forms import profile_input

M1, M2, M3 = (address_from_pubkey(bytes([n]) * 32) for n in (1, 2, 3))
OLD: dict[str, Any] = {  # a profile stored before the escrow keys existed
    "name": "Old shop",
    "description": "",
    "policies": {"shipping": "", "returns": "", "terms": "", "privacy": ""},
    "moderators": [M1],
    "vacation": False,
    "display_unit": "sat",
}


def old() -> Profile:
    return P.validate(dict(OLD))


def terms(onion: str, percent: int = 2, fee: int = 0, text: str = "Fair.") -> ModeratorTermsRecord:
    return ModeratorTermsRecord(onion=onion, fee_percent=percent, fee_sat=Sats(fee), terms=text)


def test_an_old_profile_loads_and_saves_unchanged() -> None:
    profile = P.validate({"description": "new"}, partial=old())
    assert set(profile) == set(OLD) and profile["description"] == "new"
    assert store_terms(profile, PaymentSettings(timeout_blocks=6480, accept_window=259200)) == (6480, 259200)


@pytest.mark.parametrize("blocks", [144, 6480, 65535, "200", " 300 "])
def test_timeout_blocks_in_range(blocks: object) -> None:
    got = P.validate({"escrow_timeout_blocks": blocks}, partial=old())["escrow_timeout_blocks"]
    assert got == int(str(blocks).strip())


@pytest.mark.parametrize("blocks", [143, 65536, 0, -1, 1.5, True, "abc", "²", [144]])
def test_timeout_blocks_out_of_range(blocks: object) -> None:
    with pytest.raises(ValidationError) as exc:
        P.validate({"escrow_timeout_blocks": blocks}, partial=old())
    assert "144 to 65535" in exc.value.fields["escrow_timeout_blocks"]


@pytest.mark.parametrize("window", [3600, 86400, 30 * 86400])
def test_accept_window_in_range(window: int) -> None:
    assert P.validate({"accept_window": window}, partial=old())["accept_window"] == window


@pytest.mark.parametrize("window", [3599, 30 * 86400 + 1, False, "1h"])
def test_accept_window_out_of_range(window: object) -> None:
    with pytest.raises(ValidationError) as exc:
        P.validate({"accept_window": window}, partial=old())
    assert "1 hour to 30 days" in exc.value.fields["accept_window"]


def test_cleared_terms_mean_the_nodes_settings() -> None:
    set_ = P.validate({"escrow_timeout_blocks": 200, "accept_window": 7200}, partial=old())
    kept = P.validate({"name": "Renamed"}, partial=set_)
    assert (kept["escrow_timeout_blocks"], kept["accept_window"]) == (200, 7200)
    assert store_terms(kept, PaymentSettings()) == (200, 7200)
    cleared = P.validate({"escrow_timeout_blocks": None, "accept_window": ""}, partial=set_)
    assert (cleared["escrow_timeout_blocks"], cleared["accept_window"]) == (None, None)  # null, not dropped
    assert store_terms(cleared, PaymentSettings(timeout_blocks=500, accept_window=9000)) == (500, 9000)


def test_moderator_terms_follow_the_accepted_moderators() -> None:
    profile = P.validate(
        {"moderators": [M2, M1], "moderator_terms": [terms(M2), terms(M3), terms(M1, 5)]}, partial=old()
    )
    assert profile["moderator_terms"] == [terms(M1, 5), terms(M2)]  # M3 is not accepted: dropped
    fewer = P.validate({"moderators": [f"{M2}.onion"]}, partial=profile)
    assert fewer["moderator_terms"] == [terms(M2)]
    none = P.validate({"moderators": []}, partial=fewer)
    assert none["moderator_terms"] == []


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"onion": "nope", "fee_percent": 1, "fee_sat": 0, "terms": ""}, "moderator_terms[0]"),
        ("text", "moderator_terms[0]"),
        ({"onion": M1, "fee_percent": 51, "fee_sat": 0, "terms": ""}, "moderator_terms[0].fee_percent"),
        ({"onion": M1, "fee_percent": 1, "fee_sat": -1, "terms": ""}, "moderator_terms[0].fee_sat"),
        ({"onion": M1, "fee_percent": 1, "fee_sat": 0, "terms": 7}, "moderator_terms[0].terms"),
        ({"onion": M1, "fee_percent": 1, "fee_sat": 0, "terms": "x" * 10_001}, "moderator_terms[0].terms"),
    ],
)
def test_bad_moderator_terms_are_refused(entry: object, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        P.validate({"moderator_terms": [entry]}, partial=old())
    assert field in exc.value.fields


def test_unknown_fields_are_still_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        P.validate({"escrow_timeout": 200}, partial=old())
    assert exc.value.fields == {"escrow_timeout": "unknown field"}


def test_the_admin_form_takes_hours_and_blank_means_the_nodes_setting() -> None:
    base = {"name": "Shop", "display_unit": "sat"}
    typed = profile_input({**base, "escrow_timeout_blocks": " 1000 ", "accept_window_hours": "1.5"})
    assert (typed["escrow_timeout_blocks"], typed["accept_window"]) == ("1000", 5400)
    profile = P.validate(typed, partial=old())
    assert (profile["escrow_timeout_blocks"], profile["accept_window"]) == (1000, 5400)
    blank = profile_input({**base, "escrow_timeout_blocks": "", "accept_window_hours": ""})
    assert (blank["escrow_timeout_blocks"], blank["accept_window"]) == (None, None)
    bad = profile_input({**base, "accept_window_hours": "three days"})
    with pytest.raises(ValidationError) as exc:
        P.validate(bad, partial=old())
    assert "accept_window" in exc.value.fields
    with pytest.raises(ValidationError):
        P.validate(profile_input({**base, "accept_window_hours": "0.5"}), partial=old())


def offer(onion: str, percent: int = 2, enabled: bool = True) -> ModeratorOffer:
    return ModeratorOffer(onion=onion, enabled=enabled, fee_percent=percent, fee_sat=Sats(100), terms="T")


def test_merged_terms_keep_what_an_unreachable_moderator_published() -> None:
    profile = P.validate({"moderators": [M1, M2, M3], "moderator_terms": [terms(M1), terms(M2)]}, partial=old())
    answers = {M1: (offer(M1, 7), True), M2: (None, False), M3: (None, True)}
    assert merged_terms(profile, answers) == [terms_record(offer(M1, 7)), terms(M2)]
    gone = {M1: (None, True), M2: (None, True), M3: (offer(M3), True)}
    assert merged_terms(profile, gone) == [terms(M3, 2, 100, "T")]
    assert merged_terms(old(), {}) == []  # an old profile without published terms
