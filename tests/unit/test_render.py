"""Template filters: money as integer arithmetic, Markdown without HTML or links."""

from node.web.render import fiat, markdown, sats


def test_sats_formats_without_floats():
    assert sats(1) == "1 sat" and sats(123456) == "123,456 sats"
    assert sats(2_100_000_000_000_000, "BTC") == "21000000.00000000 BTC"
    assert sats(1, "BTC") == "0.00000001 BTC" and sats(150_000, "mBTC") == "1.50000 mBTC"
    assert sats(None) == ""


def test_fiat_reference():
    assert fiat({"currency": "EUR", "minor": 2505}) == "≈ 25.05 EUR" and fiat(None) == ""


def test_markdown_escapes_html_and_drops_links():
    html = str(markdown("**bold** <script>alert(1)</script> [x](http://evil.example/) ![i](http://evil.example/a.png)"))
    assert "<strong>bold</strong>" in html
    assert "<script" not in html and "&lt;script&gt;" in html
    assert "href" not in html and "<img" not in html and "src=" not in html
    assert "<a" not in str(markdown("<http://evil.example/>"))
