"""CSV import parsing: every bad line reported before anything is written."""

import pytest

from node.errors import ValidationError
from node.market import importer

NOW = 1_800_000_000


def parse(text, tmp_path):
    return importer.parse(text, base_dir=tmp_path, max_images=3, now=NOW)


def test_rows_parse_with_repeated_fields(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    text = (
        "title,price_sat,shipping,variants,coupons,tags,images,expires_at,ref_currency,ref_minor\n"
        'Socks,1000,"Post | DE, FR | 500; Air | WORLDWIDE | 900",S | Small | | 3,'
        'TEN | 10%,"wool, warm",a.jpg,2030-01-02,EUR,1250\n'
    )
    (row,) = parse(text, tmp_path)
    assert row.line == 2 and row.images == [tmp_path / "a.jpg"]
    assert row.data["shipping"][1] == {"name": "Air", "regions": "WORLDWIDE", "price_sat": "900"}
    assert row.data["variants"][0]["sku"] == "S" and row.data["coupons"][0]["percent"] == "10"
    assert row.data["expires_at"] == 1893542400
    assert row.data["ref_price"] == {"currency": "EUR", "minor": "1250"}


def test_every_bad_line_is_named(tmp_path):
    text = "title,price_sat,kind\nOk,5,digital\n,1.5,digital\nNo ship,5,physical\nPic,5,digital\n"
    with pytest.raises(ValidationError) as exc:
        parse(text, tmp_path)
    fields = exc.value.fields
    assert {"line 3: title", "line 3: price_sat", "line 4: shipping"} <= set(fields)
    assert not any(k.startswith("line 2") for k in fields)
    assert "nothing was imported" in exc.value.message


def test_header_must_be_known(tmp_path):
    with pytest.raises(ValidationError, match="colour"):
        parse("title,price_sat,colour\n", tmp_path)
    with pytest.raises(ValidationError):
        parse("name,price\n", tmp_path)


def test_missing_image_file_is_reported(tmp_path):
    with pytest.raises(ValidationError) as exc:
        parse("title,price_sat,kind,images\nA,5,digital,nope.jpg\n", tmp_path)
    assert "nope.jpg" in exc.value.fields["line 2: images"]
