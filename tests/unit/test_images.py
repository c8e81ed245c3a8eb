"""Uploaded images are re-encoded: metadata gone, orientation applied, limits enforced."""

import io

import pytest
from PIL import Image

from node.core.errors import PayloadTooLarge, ValidationError
from node.market import images


def jpeg_with_exif(size=(64, 32), orientation=1) -> bytes:
    img = Image.new("RGB", size, (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam Inc"  # Make
    exif[0x0131] = "secret-software"  # Software
    exif[0x0112] = orientation
    exif[0x8825] = {0x0001: "N", 0x0002: (52.0, 31.0, 12.0)}  # GPS IFD
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif, comment=b"private comment")
    return out.getvalue()


def process(data, **kw):
    return images.process(data, max_bytes=kw.get("max_bytes", 10**7), max_side=kw.get("max_side", 1600))


def test_source_really_has_exif():
    data = jpeg_with_exif()
    assert b"SpyCam" in data and Image.open(io.BytesIO(data)).getexif()


def test_exif_comment_and_gps_are_removed():
    out = process(jpeg_with_exif())
    for blob in (out.full, out.thumb):
        img = Image.open(io.BytesIO(blob))
        assert img.format == "JPEG"
        assert not img.getexif() and "exif" not in img.info and "comment" not in img.info
        assert b"SpyCam" not in blob and b"secret-software" not in blob and b"Exif" not in blob


def test_orientation_is_applied_to_pixels():
    out = process(jpeg_with_exif(size=(64, 32), orientation=6))  # rotate 90
    assert (out.width, out.height) == (32, 64)


def test_large_images_are_scaled_and_thumbnailed():
    buf = io.BytesIO()
    Image.new("RGB", (3000, 1000), "white").save(buf, "PNG")
    out = process(buf.getvalue(), max_side=1200)
    assert (out.width, out.height) == (1200, 400)
    assert max(Image.open(io.BytesIO(out.thumb)).size) == images.THUMB_SIDE
    assert len(out.id) == 64


def test_transparent_png_becomes_white_backed_jpeg():
    buf = io.BytesIO()
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(buf, "PNG")
    img = Image.open(io.BytesIO(process(buf.getvalue()).full))
    assert img.mode == "RGB" and img.getpixel((5, 5))[0] > 240


def test_garbage_and_oversize_rejected():
    with pytest.raises(ValidationError):
        process(b"not an image at all")
    with pytest.raises(ValidationError):
        process(jpeg_with_exif()[:200])
    with pytest.raises(PayloadTooLarge):
        process(jpeg_with_exif(), max_bytes=100)


def test_unsupported_format_rejected():
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "BMP")
    with pytest.raises(ValidationError, match="BMP"):
        process(buf.getvalue())


def test_pixel_limits_per_format():
    buf = io.BytesIO()
    Image.new("1", (6000, 5000)).save(buf, "PNG")  # 30 MP: tiny file, too many pixels to decode
    with pytest.raises(ValidationError, match="30 megapixels"):
        process(buf.getvalue())
    buf = io.BytesIO()
    Image.new("L", (8000, 5000), 128).save(buf, "JPEG", quality=30)  # 40 MP JPEG: decoded scaled
    out = process(buf.getvalue())
    assert (out.width, out.height) == (1600, 1000)
