"""CSV import parsing: every bad line reported before anything is written."""

import dataclasses
import json

import pytest

from node.adapters import dbfiles
from node.core.errors import Conflict, ValidationError
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


# -- images: every file checked (format, bytes, pixels) before anything is written --
LIMITS = importer.ImageLimits(max_bytes=20_000, max_side=400)


def _png(path, size=(8, 8), noise=False):
    import os

    from PIL import Image

    img = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)) if noise else Image.new("RGB", size, "red")
    img.save(path, format="PNG")
    return path


def test_a_bad_image_anywhere_names_its_file_and_line(tmp_path):
    _png(tmp_path / "ok.png")
    (tmp_path / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    big = _png(tmp_path / "big.png", size=(200, 200), noise=True)
    assert big.stat().st_size > LIMITS.max_bytes
    lines = ["title,price_sat,kind,images"] + [f"Item {i},5,digital,ok.png" for i in range(130)]
    lines[101] = "Item 100,5,digital,ok.png;logo.svg"
    lines[120] = "Item 119,5,digital,big.png"
    with pytest.raises(ValidationError) as exc:
        importer.parse("\n".join(lines) + "\n", base_dir=tmp_path, max_images=3, now=NOW, image_limits=LIMITS)
    fields = exc.value.fields
    assert set(fields) == {"line 102: images", "line 121: images"}
    assert "logo.svg" in fields["line 102: images"] and "ok.png" not in fields["line 102: images"]
    assert "big.png" in fields["line 121: images"] and "max_image_bytes" in fields["line 121: images"]
    assert "nothing was imported" in exc.value.message


def test_good_images_pass_and_each_file_is_checked_once(tmp_path, monkeypatch):
    _png(tmp_path / "ok.png")
    seen = []
    real = importer.image_check.process

    def counting(data, **kw):
        seen.append(len(data))
        return real(data, **kw)

    monkeypatch.setattr(importer.image_check, "process", counting)
    text = "title,price_sat,kind,images\n" + "".join(f"I{i},5,digital,ok.png\n" for i in range(20))
    rows = importer.parse(text, base_dir=tmp_path, max_images=3, now=NOW, image_limits=LIMITS)
    assert len(rows) == 20 and rows[0].images == [tmp_path / "ok.png"] and len(seen) == 1


# -- header, encoding, lines ------------------------------------------------------
def test_a_duplicate_header_column_is_refused_by_name(tmp_path):
    with pytest.raises(ValidationError) as exc:
        parse("title,price_sat,kind,price_sat\nA,5,digital,6\n", tmp_path)
    assert "'price_sat' is columns 2 and 4" in exc.value.fields["header"]


def test_a_byte_that_is_not_utf8_is_named_by_line_and_offset():
    data = "title,price_sat\nTea,5\nCafé,6\n".encode("latin-1")
    with pytest.raises(ValidationError) as exc:
        importer.decode(data)
    offset = data.index(b"\xe9")
    (message,) = exc.value.fields.values()
    assert list(exc.value.fields) == ["line 3"]
    assert f"byte {offset} of the file" in message and "column 4" in message and "UTF-8" in message
    with pytest.raises(ValidationError) as exc:  # a BOM does not shift the offset
        importer.decode(b"\xef\xbb\xbf" + data)
    assert f"byte {offset + 3} " in exc.value.fields["line 3"]
    with pytest.raises(ValidationError) as exc:
        importer.decode("title\n".encode("utf-16"))
    assert "UTF-16" in exc.value.fields["file"]
    assert importer.decode(b"\xef\xbb\xbftitle\n") == "title\n"


def test_an_oversized_cell_is_reported_on_the_line_its_row_starts(tmp_path):
    import csv

    huge = "\n".join(["x" * (csv.field_size_limit() // 3)] * 4)  # crosses the limit on its 4th line
    text = f'title,price_sat,kind,description\nA,5,digital,ok\nB,5,digital,"{huge}"\nC,5,digital,ok\n'
    with pytest.raises(ValidationError) as exc:
        parse(text, tmp_path)
    assert list(exc.value.fields) == ["line 3"]
    assert "longer than" in exc.value.fields["line 3"]


def test_a_row_spanning_lines_is_named_by_its_first_line(tmp_path):
    text = 'title,price_sat,kind,description\nA,5,digital,"two\nlines"\nB,x,digital,"also\ntwo"\n\nC,5,digital,ok\n'
    with pytest.raises(ValidationError) as exc:
        parse(text, tmp_path)
    assert list(exc.value.fields) == ["line 4: price_sat"]
    rows = parse(text.replace(",x,", ",7,"), tmp_path)
    assert [r.line for r in rows] == [2, 4, 7]


def test_an_unclosed_quote_names_the_line_it_opens(tmp_path):
    with pytest.raises(ValidationError) as exc:
        parse('title,price_sat,kind\nA,5,digital\n"B,5,digital\nC,5,digital\n', tmp_path)
    assert "never closed" in exc.value.fields["line 3"]


def test_too_many_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "MAX_ROWS", 3)
    parse("title,price_sat,kind\n" + "A,5,digital\n" * 3, tmp_path)
    with pytest.raises(ValidationError, match="at most 3 rows"):
        parse("title,price_sat,kind\n" + "A,5,digital\n" * 4, tmp_path)


# -- batches ------------------------------------------------------------------------
def _rows(n, size=100):
    return [importer.Row(line=i + 2, data={}, images=[], size=size) for i in range(n)]


def test_batches_double_so_a_big_import_rewrites_the_file_a_few_times():
    rows = _rows(100_000)
    sizes = [len(b) for b in importer.batches(rows, max_bytes=10**9)]
    assert sum(sizes) == 100_000 and sizes[:4] == [50, 50, 100, 200]
    assert len(sizes) <= 12
    # Each batch rewrites everything stored so far: about 2x the final file in all (not n^2 / 100).
    rewritten = sum(sum(sizes[: i + 1]) for i in range(len(sizes)))
    assert rewritten <= 2.1 * 100_000


def test_batches_keep_order_stay_within_bytes_and_honour_a_fixed_size():
    rows = _rows(5000, size=1000)
    batches = list(importer.batches(rows, max_bytes=300_000))
    assert [r for b in batches for r in b] == rows
    assert max(sum(r.size for r in b) for b in batches) <= 300_000
    assert [len(b) for b in importer.batches(_rows(120), max_bytes=10**9, fixed=50)] == [50, 50, 20]
    huge = [importer.Row(line=2, data={}, images=[], size=10**9)]
    assert [len(b) for b in importer.batches(huge, max_bytes=1000)] == [1]  # one row always goes


# -- the CLI's writer: what it says when a batch fails ----------------------------------
class FakeBackend:
    def __init__(self, fail_at, error):
        self.calls, self.fail_at, self.error = 0, fail_at, error

    async def add_listings(self, onion, items):
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error
        return items


async def _write_all(backend, rows):
    from node.cli.importing import _Importer

    run = _Importer(backend, "x", rows)
    for batch in importer.batches(rows, max_bytes=10**9):
        await run.write(batch)


async def test_a_refused_batch_names_its_lines_and_where_to_resume(tmp_path):
    rows = parse("title,price_sat,kind\n" + "A,5,digital\n" * 200, tmp_path)
    error = ValidationError({"[1].price_sat": "too high", "[0].title": "taken"})
    with pytest.raises(ValidationError) as exc:
        await _write_all(FakeBackend(3, error), rows)  # batches: 50, 50, 100 -> the third is lines 102-201
    assert exc.value.fields == {"line 103: price_sat": "too high", "line 102: title": "taken"}
    assert "100 of 200 rows were acknowledged as stored (CSV lines 2-101)" in exc.value.message
    assert "lines 102-201 were not" in exc.value.message and "--from-line 102" in exc.value.message


async def test_a_node_gone_mid_import_says_what_was_stored(tmp_path):
    from node.core.errors import PasarError

    rows = parse("title,price_sat,kind\n" + "A,5,digital\n" * 200, tmp_path)
    with pytest.raises(PasarError) as exc:
        await _write_all(FakeBackend(2, PasarError("the running node stopped answering")), rows)
    message = exc.value.message
    assert message.startswith("the running node stopped answering. 50 of 200 rows were acknowledged as stored")
    assert "Lines 52-101 were being written and may or may not be stored" in message
    assert "--from-line 52`; this is safe, rows already stored are skipped" in message


async def test_the_writer_sends_each_rows_key_and_counts_the_rows_skipped(tmp_path):
    from node.cli.importing import _Importer

    class Dedup:
        def __init__(self):
            self.keys = set()

        async def add_listings(self, onion, items):
            fresh = [x for x in items if x["import_key"] not in self.keys]
            self.keys |= {x["import_key"] for x in items}
            return fresh

    backend, rows = Dedup(), parse("title,price_sat,kind\n" + "A,5,digital\n" * 120, tmp_path)
    for attempt in (rows[:70], rows):  # cut off after 70 rows, then the whole file again
        run = _Importer(backend, "x", attempt)
        for batch in importer.batches(attempt, max_bytes=10**9):
            await run.write(batch)
    assert (run.done, run.skipped) == (120, 70) and len(backend.keys) == 120


def test_resuming_from_a_line_skips_the_rows_before_it(tmp_path):
    text = "title,price_sat,kind,images\n,bad,digital,nope.jpg\nB,5,digital\nC,6,digital\n"
    rows = importer.parse(text, base_dir=tmp_path, max_images=3, now=NOW, image_limits=LIMITS, from_line=3)
    assert [(r.line, r.data["title"]) for r in rows] == [(3, "B"), (4, "C")]


# -- idempotency: each row's import key ------------------------------------------------
def test_row_keys_follow_content_not_bytes_or_lines(tmp_path):
    text = "title,price_sat,kind\nA,5,digital\nB,6,digital\nA,5,digital\n"
    keys = [r.key for r in parse(text, tmp_path)]
    assert len(set(keys)) == 3 and all(k.startswith("csv:") and len(k) <= 80 for k in keys)
    assert keys[0].endswith(":1") and keys[2] == keys[0][:-1] + "2"  # identical rows stay apart
    # Saved again by a spreadsheet: BOM, CRLF, other column order, quotes, an extra empty column.
    resaved = '\ufeffkind,title,price_sat,category\r\ndigital,"A",5,\r\ndigital,B,6,\r\ndigital,A, 5 ,\r\n'
    assert [r.key for r in parse(importer.decode(resaved.encode()), tmp_path)] == keys
    # A row added at the top moves every line but no key; an edited row gets a new one.
    assert [r.key for r in parse(text.replace("kind\n", "kind\nNew,1,digital\n"), tmp_path)][1:] == keys
    assert [r.key for r in parse(text.replace("B,6", "B,7"), tmp_path)][1] != keys[1]


def test_resuming_from_a_line_gives_the_rows_the_keys_of_the_first_run(tmp_path):
    text = "title,price_sat,kind\n" + "A,5,digital\n" * 4 + "B,5,digital\n"
    everything = parse(text, tmp_path)
    resumed = importer.parse(text, base_dir=tmp_path, max_images=3, now=NOW, from_line=4)
    assert [r.key for r in resumed] == [r.key for r in everything[2:]]


@pytest.mark.parametrize("bad", ["", " ", "a b", "x" * 81, "caf\u00e9", 7, ["k"], "tab\t"])
def test_an_import_key_must_be_short_printable_ascii(bad):
    from node.market import listings

    with pytest.raises(ValidationError) as exc:
        listings.validate({"title": "A", "price_sat": 5, "kind": "digital", "import_key": bad}, max_images=3, now=NOW)
    assert "import_key" in exc.value.fields


def test_the_import_key_is_kept_privately_never_published():
    from node.market import listings

    data = {"title": "A", "price_sat": 5, "kind": "digital", "import_key": "csv:" + "f" * 32 + ":1"}
    clean = listings.validate(data, max_images=3, now=NOW)  # accepted (an edit sends it back unchanged)
    view = listings.public_view(
        {**clean, "id": "x", "import_key": data["import_key"], "created_at": 1, "updated_at": 1}
    )
    assert "import_key" not in view and "csv:" not in json.dumps(view)


async def test_the_market_skips_listings_whose_import_key_is_stored(tmp_path):
    from node.adapters.store import Storage
    from node.core.config import Config
    from node.market.market import Limits, Market

    dbfiles.initialise(tmp_path)
    storage = Storage(tmp_path)
    await storage.open()
    try:
        limits = dataclasses.replace(Limits.from_config(Config(data_dir=tmp_path)), store_port_base=0)
        market = Market(storage, limits, clock=lambda: NOW)
        onion = (await market.create_store({"name": "Shop"}))["onion"]
        rows = [{"title": t, "price_sat": 5, "kind": "digital", "import_key": f"k{t}"} for t in "ABC"]
        assert len(await market.add_listings(onion, rows[:2])) == 2
        catalog_before = (await market.snapshot(onion)).envelope_bytes
        stored = await market.add_listings(onion, rows)  # A and B again: only C is new
        assert [x["title"] for x in stored] == ["C"] and stored[0]["import_key"] == "kC"
        assert sorted(x["title"] for x in await market.listings(onion)) == ["A", "B", "C"]
        assert b"import_key" not in (await market.snapshot(onion)).envelope_bytes != catalog_before
        with pytest.raises(Conflict, match="kA"):  # one listing alone: a clear 409, not an empty reply
            await market.add_listing(onion, rows[0])
        with pytest.raises(ValidationError) as exc:
            await market.add_listings(onion, [rows[0], {**rows[1], "import_key": "no spaces"}])
        assert list(exc.value.fields) == ["[1].import_key"]
    finally:
        await storage.close()
