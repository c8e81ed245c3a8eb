"""Listing validation and the public (catalog) view of a listing."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Mapping, Sequence

from ..core import fields as f
from ..core.crypto import content_hash
from ..core.errors import ValidationError
from ..core.models import (
    Coupon,
    ImageRef,
    Listing,
    ListingFields,
    PublicListing,
    RefPrice,
    ShippingOption,
    Variant,
)

KINDS = ("physical", "digital", "service")
FORMATS = ("text", "markdown")
WORLDWIDE = "WORLDWIDE"
_REGION = re.compile(r"^[A-Z]{2}$")
_SKU = re.compile(r"^[A-Za-z0-9._-]{1,40}$")
_COUPON = re.compile(r"^[A-Za-z0-9_-]{3,32}$")
_IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_TAG = re.compile(r"^[\w .&+-]{1,30}$")
_IMPORT_KEY = re.compile(r"^[\x21-\x7e]{1,80}$")  # printable ASCII, no spaces
# Kept by the store, never published: ``import_key`` says where an imported listing came from.
PRIVATE_FIELDS = ("coupons", "active", "import_key")
# A listing may end at most this far ahead (and so always before year 9999).
MAX_EXPIRY_AHEAD = 10 * 366 * 86400


def new_id() -> str:
    return secrets.token_hex(6)


def _objects(
    data: f.Data, name: str, errors: f.Errors, max_items: int, fields_hint: str
) -> Iterator[tuple[str, dict[str, object]]]:
    """(``name[i]``, object) for each entry of a list of objects; others are errors."""
    for i, raw in enumerate(f.items(data, name, errors, max_items=max_items)):
        if isinstance(raw, dict):
            yield f"{name}[{i}]", raw
        else:
            errors.add(f"{name}[{i}]", f"must be an object with {fields_hint}")


def _shipping(data: f.Data, errors: f.Errors) -> list[ShippingOption]:
    out: list[ShippingOption] = []
    for key, raw in _objects(data, "shipping", errors, 20, "name, regions, price_sat"):
        name = f.text(raw, "name", errors, max_len=60, required=True, field=f"{key}.name")
        regions = raw.get("regions") or []
        if isinstance(regions, str):
            regions = [r for r in re.split(r"[,\s]+", regions) if r]
        regions = [str(r).strip().upper() for r in regions] if isinstance(regions, list) else []
        bad = [r for r in regions if r != WORLDWIDE and not _REGION.match(r)]
        if not regions or bad:
            errors.add(f"{key}.regions", "list two-letter country codes or WORLDWIDE")
        price = f.required_sats(raw, "price_sat", errors, field=f"{key}.price_sat")
        out.append(ShippingOption(name=name, regions=sorted(set(regions)), price_sat=price))
    if len({s["name"] for s in out}) != len(out):
        errors.add("shipping", "shipping option names must be different")
    return out


def _variants(data: f.Data, errors: f.Errors) -> list[Variant]:
    out: list[Variant] = []
    for key, raw in _objects(data, "variants", errors, 100, "sku, label, price_sat, inventory"):
        sku = str(raw.get("sku") or "").strip()
        if not _SKU.match(sku):
            errors.add(f"{key}.sku", "1-40 letters, digits, dot, dash or underscore")
        label = f.text(raw, "label", errors, max_len=80, required=True, field=f"{key}.label")
        price = f.sats(raw, "price_sat", errors, minimum=1, field=f"{key}.price_sat")
        stock = f.integer(raw, "inventory", errors, maximum=10**9, field=f"{key}.inventory")
        out.append(Variant(sku=sku, label=label, price_sat=price, inventory=stock))
    if len({v["sku"] for v in out}) != len(out):
        errors.add("variants", "SKUs must be different")
    return out


def _coupons(data: f.Data, errors: f.Errors) -> list[Coupon]:
    out: list[Coupon] = []
    for key, raw in _objects(data, "coupons", errors, 20, "code and percent or amount_sat"):
        code = str(raw.get("code") or "").strip()
        if not _COUPON.match(code):
            errors.add(f"{key}.code", "3-32 letters, digits, dash or underscore")
        percent = f.integer(raw, "percent", errors, minimum=1, maximum=100, field=f"{key}.percent")
        amount = f.sats(raw, "amount_sat", errors, minimum=1, field=f"{key}.amount_sat")
        if (percent is None) == (amount is None):
            errors.add(key, "give either percent or amount_sat")
        out.append(Coupon(code=code, percent=percent, amount_sat=amount))
    if len({str(c["code"]).upper() for c in out}) != len(out):
        errors.add("coupons", "coupon codes must be different")
    return out


def _ref_price(data: f.Data, errors: f.Errors) -> RefPrice | None:
    raw = data.get("ref_price")
    if raw in (None, "", {}):
        return None
    if not isinstance(raw, dict):
        errors.add("ref_price", "must be an object with currency and minor")
        return None
    currency = str(raw.get("currency") or "").strip().upper()
    if not _CURRENCY.match(currency):
        errors.add("ref_price.currency", "a three-letter currency code such as EUR")
    minor = f.integer(raw, "minor", errors, maximum=10**12, required=True, field="ref_price.minor")
    return RefPrice(currency=currency, minor=minor or 0)  # 0 only beside an error: never stored


def _tags(data: f.Data, errors: f.Errors) -> list[str]:
    raw = data.get("tags")
    if isinstance(raw, str):
        raw = [t for t in re.split(r"[,;]", raw)]
    tags = [str(t).strip().lower() for t in f.items({"tags": raw}, "tags", errors, max_items=10)]
    tags = [t for t in tags if t]
    if any(not _TAG.match(t) for t in tags):
        errors.add("tags", "tags are 1-30 letters, digits, spaces or .&+-")
    return sorted(set(tags))


def _expiry(data: f.Data, errors: f.Errors, now: int) -> int | None:
    """Unix seconds in the future, at most ten years ahead; None = no end."""
    value = f.integer(data, "expires_at", errors, minimum=1, maximum=2**63)
    if value is None or "expires_at" in errors:
        return None
    if value <= now:
        errors.add("expires_at", "must be in the future (clear it to keep the listing without an end)")
    elif value > now + MAX_EXPIRY_AHEAD:
        errors.add("expires_at", "must be at most 10 years ahead (clear it to keep the listing without an end)")
    return value


def _fields(data: f.Data, errors: f.Errors, max_images: int, now: int) -> ListingFields:
    return ListingFields(
        title=f.text(data, "title", errors, max_len=140, required=True),
        description=f.text(data, "description", errors, max_len=20_000, multiline=True),
        description_format=f.choice(data, "description_format", errors, FORMATS),
        kind=f.choice(data, "kind", errors, KINDS),
        price_sat=f.required_sats(data, "price_sat", errors, minimum=1),
        ref_price=_ref_price(data, errors),
        category=f.text(data, "category", errors, max_len=60),
        tags=_tags(data, errors),
        images=[str(i) for i in f.items(data, "images", errors, max_items=max_images)],
        shipping=_shipping(data, errors),
        variants=_variants(data, errors),
        inventory=f.integer(data, "inventory", errors, maximum=10**9),
        min_qty=f.integer(data, "min_qty", errors, minimum=1, maximum=10**6, default=1),
        max_qty=f.integer(data, "max_qty", errors, minimum=1, maximum=10**6),
        expires_at=_expiry(data, errors, now),
        coupons=_coupons(data, errors),
        active=f.boolean(data, "active", errors, default=True),
    )


def validate(data: object, *, max_images: int, now: int) -> ListingFields:
    """Clean a listing as entered; raises ValidationError listing every problem."""
    if not isinstance(data, dict):
        raise ValidationError({"listing": "must be a JSON object"})
    errors = f.Errors()
    out = _fields(data, errors, max_images, now)
    if any(not _IMAGE_ID.match(i) for i in out["images"]):
        errors.add("images", "unknown image id: upload images first")
    if out["kind"] == "physical" and not out["shipping"] and "shipping" not in errors:
        errors.add("shipping", "a physical item needs at least one shipping option")
    if out["max_qty"] is not None and out["min_qty"] and out["max_qty"] < out["min_qty"]:
        errors.add("max_qty", "must not be below min_qty")
    if out["variants"] and out["inventory"] is not None:
        errors.add("inventory", "with variants, set inventory per variant")
    key = data.get("import_key")  # checked here, kept by the caller (a new listing) or ignored (an edit)
    if key is not None and not (isinstance(key, str) and _IMPORT_KEY.match(key)):
        errors.add("import_key", "1-80 printable ASCII characters without spaces")
    unknown = set(data) - set(out) - {"id", "created_at", "updated_at", "import_key"}
    if unknown:
        errors.add(sorted(unknown)[0], "unknown field")
    if errors:
        raise ValidationError(errors)
    return out


def _new(clean: ListingFields, import_key: object, now: int) -> Listing:
    key = "" if import_key is None else str(import_key)
    listing: Listing = {"id": new_id(), **clean, "import_key": key, "created_at": now, "updated_at": now}
    if import_key is None:
        del listing["import_key"]
    return listing


def edited(current: Listing, clean: ListingFields, now: int) -> Listing:
    """``current`` with the merchant's new fields: id and created_at kept, updated at ``now``.

    No ``import_key``: an edit keeps the stored one (storage merges the fields into the stored listing).
    """
    updated: Listing = {
        **clean,
        "import_key": "",  # gives mypy every key of a Listing; removed again below
        "id": current["id"],
        "created_at": current["created_at"],
        "updated_at": now,
    }
    del updated["import_key"]
    return updated


def validate_new(inputs: Sequence[object], *, max_images: int, now: int) -> list[Listing]:
    """New listings (fresh ids) from ``inputs``; one ValidationError naming every problem (``[n].field``)."""
    problems: dict[str, str] = {}
    out: list[Listing] = []
    for n, data in enumerate(inputs):
        try:
            clean = validate(data, max_images=max_images, now=now)
        except ValidationError as exc:
            prefix = f"[{n}]." if len(inputs) > 1 else ""
            problems.update({prefix + k: v for k, v in exc.fields.items()})
            continue
        out.append(_new(clean, data.get("import_key") if isinstance(data, dict) else None, now))
    if problems:
        raise ValidationError(problems)
    return out


def with_stock(item: Listing, counts: Mapping[str, object], errors: dict[str, str]) -> Listing | None:
    """A copy of ``item`` with new stock counts; None (and an error) if a SKU is unknown."""
    checked: dict[str, int | None] = {}
    for sku, count in counts.items():
        if count is None or (isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= 10**9):
            checked[sku] = count
        else:
            errors[f"{item['id']}:{sku}"] = "a whole number from 0, or empty for unlimited"
    updated: Listing
    if item["variants"]:
        unknown = set(counts) - {v["sku"] for v in item["variants"]}
        variants: list[Variant] = [{**v, "inventory": checked.get(v["sku"], v["inventory"])} for v in item["variants"]]
        updated = {**item, "variants": variants}
    else:
        unknown = set(counts) - {""}
        updated = {**item, "inventory": checked.get("", item["inventory"])}
    if unknown:
        errors[f"{item['id']}:{sorted(unknown)[0]}"] = "unknown SKU for this listing"
    return None if unknown or any(k.startswith(item["id"] + ":") for k in errors) else updated


def is_active(listing: Listing, now: int) -> bool:
    expires = listing.get("expires_at")
    return bool(listing.get("active")) and (expires is None or expires > now)


def in_stock(listing: Listing | PublicListing) -> bool:
    if listing.get("variants"):
        return any(v["inventory"] is None or v["inventory"] > 0 for v in listing["variants"])
    inventory = listing.get("inventory")
    return inventory is None or inventory > 0


def public_view(listing: Listing) -> PublicListing:
    """The listing as published in the signed catalog, with its content hash (``PRIVATE_FIELDS`` left out)."""
    view = PublicListing(
        id=listing["id"],
        created_at=listing["created_at"],
        updated_at=listing["updated_at"],
        title=listing["title"],
        description=listing["description"],
        description_format=listing["description_format"],
        kind=listing["kind"],
        price_sat=listing["price_sat"],
        ref_price=listing["ref_price"],
        category=listing["category"],
        tags=listing["tags"],
        images=[ImageRef(id=i, path=f"/images/{i}.jpg") for i in listing["images"]],
        shipping=listing["shipping"],
        variants=listing["variants"],
        inventory=listing["inventory"],
        min_qty=listing["min_qty"],
        max_qty=listing["max_qty"],
        expires_at=listing["expires_at"],
        # Codes are short and guessable: even a hash would give them away. The
        # store checks a code at checkout; the catalog only says coupons exist.
        accepts_coupons=bool(listing["coupons"]),
        hash="",
    )
    view["hash"] = content_hash({k: v for k, v in view.items() if k != "hash"})
    return view
