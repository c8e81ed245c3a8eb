"""Listing validation: every problem reported per field; integers only for money."""

import pytest

from node.core.errors import ValidationError
from node.market import listings, profile
from node.market.lineformats import (
    format_coupons,
    format_shipping,
    format_variants,
    parse_coupons,
    parse_shipping,
    parse_variants,
)

NOW = 1_800_000_000
SHIP = [{"name": "Post", "regions": ["DE", "fr"], "price_sat": 1500}]


def valid(**over):
    data = {"title": "Wool socks", "price_sat": 25_000, "shipping": SHIP}
    data.update(over)
    return listings.validate(data, max_images=3, now=NOW)


def errors_of(**over):
    with pytest.raises(ValidationError) as exc:
        valid(**over)
    return exc.value.fields


def test_minimal_listing_gets_defaults():
    got = valid()
    assert got["kind"] == "physical" and got["active"] is True and got["min_qty"] == 1
    assert got["shipping"] == [{"name": "Post", "regions": ["DE", "FR"], "price_sat": 1500}]
    assert got["description_format"] == "text" and got["coupons"] == []


def test_numeric_strings_from_forms_become_integers():
    assert valid(price_sat="25000", inventory=" 4 ")["price_sat"] == 25000


@pytest.mark.parametrize("price", [1.5, "1.5", "1e3", -1, 0, True, "abc", 21_000_000 * 10**8 + 1])
def test_price_must_be_positive_whole_satoshis(price):
    assert "price_sat" in errors_of(price_sat=price)


def test_all_problems_reported_at_once():
    fields = errors_of(title="", price_sat=None, kind="weird", tags=["ok", "x" * 40], min_qty=0)
    assert {"title", "price_sat", "kind", "tags", "min_qty"} <= set(fields)
    assert fields["title"] == "is required"


def test_physical_needs_shipping_but_digital_does_not():
    assert "shipping" in errors_of(shipping=[])
    assert valid(kind="digital", shipping=[])["shipping"] == []


def test_shipping_regions_and_names_checked():
    fields = errors_of(
        shipping=[
            {"name": "A", "regions": ["Germany"], "price_sat": 1},
            {"name": "A", "regions": "WORLDWIDE", "price_sat": -2},
        ]
    )
    assert "shipping[0].regions" in fields and "shipping[1].price_sat" in fields and "shipping" in fields


def test_variants_skus_unique_and_inventory_per_variant():
    v = [{"sku": "S", "label": "Small", "inventory": 3}, {"sku": "M", "label": "Medium", "price_sat": 30000}]
    got = valid(variants=v)
    assert got["variants"][1] == {"sku": "M", "label": "Medium", "price_sat": 30000, "inventory": None}
    assert "variants" in errors_of(variants=[*v, {"sku": "S", "label": "again"}])
    assert "inventory" in errors_of(variants=v, inventory=5)
    assert "variants[0].sku" in errors_of(variants=[{"sku": "has space", "label": "x"}])


def test_coupons_need_exactly_one_discount():
    assert valid(coupons=[{"code": "SPRING", "percent": 10}])["coupons"][0]["amount_sat"] is None
    assert "coupons[0]" in errors_of(coupons=[{"code": "SPRING", "percent": 10, "amount_sat": 5}])
    assert "coupons[0].percent" in errors_of(coupons=[{"code": "SPRING", "percent": 101}])
    assert "coupons" in errors_of(coupons=[{"code": "ABC", "percent": 1}, {"code": "abc", "percent": 2}])


def test_expiry_must_be_in_the_future():
    assert "expires_at" in errors_of(expires_at=NOW)
    assert valid(expires_at=NOW + 1)["expires_at"] == NOW + 1


def test_quantity_limits_and_unknown_fields():
    assert "max_qty" in errors_of(min_qty=5, max_qty=2)
    assert errors_of(colour="red") == {"colour": "unknown field"}


def test_control_characters_are_stripped_and_markdown_kept():
    got = valid(title="Soc\x00ks\u202e", description="# Hi\r\n*there*", description_format="markdown")
    assert got["title"] == "Socks" and got["description"] == "# Hi\n*there*"


def test_image_ids_must_look_like_hashes():
    assert "images" in errors_of(images=["../../etc/passwd"])
    assert "images" in errors_of(images=["a" * 64] * 4)


def test_public_view_hides_coupon_codes_and_hash_is_stable():
    item = {"id": "abc", **valid(coupons=[{"code": "SECRET10", "percent": 10}]), "created_at": NOW, "updated_at": NOW}
    view = listings.public_view(item)
    assert "SECRET10" not in str(view) and "coupons" not in view and view["accepts_coupons"] is True
    assert view["hash"].startswith("sha256:") and listings.public_view(item)["hash"] == view["hash"]
    assert listings.public_view({**item, "title": "Other"})["hash"] != view["hash"]


def test_activity_and_stock():
    item = valid(expires_at=NOW + 10, inventory=0)
    assert listings.is_active(item, NOW) and not listings.is_active(item, NOW + 10)
    assert not listings.is_active({**item, "active": False}, NOW)
    assert not listings.in_stock(item) and listings.in_stock({**item, "inventory": None})


def test_line_formats_round_trip():
    ship = valid(shipping=parse_shipping("Post | DE, FR | 1500\nCourier | WORLDWIDE | 9000"))["shipping"]
    assert [s["name"] for s in ship] == ["Post", "Courier"] and ship[0]["regions"] == ["DE", "FR"]
    assert valid(shipping=parse_shipping(format_shipping(ship)))["shipping"] == ship
    var = valid(variants=parse_variants("S | Small | | 3\nM | Medium | 30000"))["variants"]
    assert valid(variants=parse_variants(format_variants(var)))["variants"] == var
    cps = valid(coupons=parse_coupons("TEN | 10%\nFIVEK | 5000"))["coupons"]
    assert valid(coupons=parse_coupons(format_coupons(cps)))["coupons"] == cps
    with pytest.raises(ValidationError) as exc:
        parse_shipping("Post | DE")
    assert "shipping[0]" in exc.value.fields


def test_profile_validation_and_partial_update():
    prof = profile.validate({"name": "Socks & Co", "policies": {"returns": "30 days"}})
    assert (
        prof["display_unit"] == "sat" and prof["policies"]["returns"] == "30 days" and prof["policies"]["terms"] == ""
    )
    updated = profile.validate({"policies": {"terms": "Be nice"}, "vacation": "on"}, partial=prof)
    assert updated["policies"] == {**prof["policies"], "terms": "Be nice"} and updated["vacation"] is True
    with pytest.raises(ValidationError, match="unknown policy"):
        profile.validate({"name": "x", "policies": {"refunds": "never"}})
    with pytest.raises(ValidationError) as exc:
        profile.validate({"name": "", "moderators": ["nope"], "display_unit": "EUR"})
    assert {"name", "moderators[0]", "display_unit"} <= set(exc.value.fields)
