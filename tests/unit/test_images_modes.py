"""Every pixel format Pillow can hand us comes out as the same picture, metadata-free."""

import io
import struct

import pytest
from PIL import Image

from node.core.errors import ValidationError
from node.market import images

RED, GREEN, WHITE, BLACK = (220, 20, 20), (20, 200, 20), (255, 255, 255), (0, 0, 0)


def process(data: bytes) -> images.Processed:
    return images.process(data, max_bytes=10**7, max_side=1600)


def saved(img: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def spy_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "SpyCam Inc"  # Make
    exif[0x8825] = {0x0001: "N", 0x0002: (52.0, 31.0, 12.0)}  # GPS IFD
    return exif


def pixel(blob: bytes, xy: tuple[int, int]) -> tuple[int, ...]:
    img = Image.open(io.BytesIO(blob))
    assert img.format == "JPEG" and img.mode == "RGB"
    return tuple(img.getpixel(xy))


def near(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 14) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def gradient_16bit(mode: str, width: int = 256) -> Image.Image:
    """A horizontal grey ramp 0..255 stored as 16-bit values (v * 257, as 8->16 bit scaling does)."""
    row = [v * 257 for v in range(width)]
    fmt = {"I;16B": ">H", "I;16L": "<H", "I;16": "<H", "I": "<i"}[mode]
    return Image.frombytes(mode, (width, 8), b"".join(struct.pack(fmt, v) for v in row * 8))


def test_16bit_greyscale_png_keeps_its_picture():
    data = saved(gradient_16bit("I;16"), "PNG")
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")  # the mode Pillow opens it as
    out = process(data)
    for x in (8, 64, 128, 200, 247):
        assert near(pixel(out.full, (x, 4)), (x, x, x), tolerance=6), x


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I"])
def test_16bit_and_32bit_integer_modes_scale_to_8_bit(mode):
    img = images.to_8bit(gradient_16bit(mode))
    assert img.mode == "L"
    assert [img.getpixel((x, 0)) for x in (0, 1, 127, 128, 254, 255)] == [0, 1, 127, 128, 254, 255]


def two_halves(mode: str, left, right, size=(20, 10)) -> Image.Image:
    img = Image.new(mode, size, right)
    img.paste(left, (0, 0, size[0] // 2, size[1]))
    return img


def palette_with_transparency() -> bytes:
    img = Image.new("P", (20, 10), 0)
    img.putpalette([0, 0, 0, *RED] + [0, 0, 0] * 254)
    img.paste(1, (0, 0, 10, 10))
    return saved(img, "PNG", transparency=0)


def grey_with_trns() -> bytes:
    return saved(two_halves("L", 128, 0), "PNG", transparency=0)


def rgb_with_trns() -> bytes:
    return saved(two_halves("RGB", RED, BLACK), "PNG", transparency=BLACK)


CASES = {
    "P-transparency": (palette_with_transparency, RED, WHITE),
    "P-transparency-gif": (lambda: palette_with_transparency_as("GIF"), RED, WHITE),
    "L-tRNS": (grey_with_trns, (128, 128, 128), WHITE),
    "RGB-tRNS": (rgb_with_trns, RED, WHITE),
    "LA": (lambda: saved(two_halves("LA", (0, 255), (0, 0)), "PNG"), BLACK, WHITE),
    "RGBA": (lambda: saved(two_halves("RGBA", (*GREEN, 255), (*BLACK, 0)), "PNG"), GREEN, WHITE),
    "RGBA-webp": (lambda: saved(two_halves("RGBA", (*GREEN, 255), (*BLACK, 0)), "WEBP", lossless=True), GREEN, WHITE),
    "1": (lambda: saved(two_halves("1", 0, 1), "PNG"), BLACK, WHITE),
    "L-jpeg": (lambda: saved(two_halves("L", 0, 255), "JPEG"), BLACK, WHITE),
    "CMYK-jpeg": (lambda: saved(two_halves("CMYK", (0, 255, 255, 0), (0, 0, 0, 0)), "JPEG"), (255, 0, 0), WHITE),
    "RGB-jpeg": (lambda: saved(two_halves("RGB", RED, GREEN), "JPEG"), RED, GREEN),
}


def palette_with_transparency_as(fmt: str) -> bytes:
    return saved(Image.open(io.BytesIO(palette_with_transparency())), fmt, transparency=0)


@pytest.mark.parametrize(("make", "left", "right"), CASES.values(), ids=CASES.keys())
def test_every_mode_keeps_its_colours_on_white(make, left, right):
    out = process(make())
    assert (out.width, out.height) == (20, 10)
    assert near(pixel(out.full, (2, 5)), left), pixel(out.full, (2, 5))
    assert near(pixel(out.full, (17, 5)), right), pixel(out.full, (17, 5))


def mpo(exif: Image.Exif | None = None) -> bytes:
    first, second = Image.new("RGB", (40, 30), RED), Image.new("RGB", (48, 30), (20, 20, 220))
    params = {"exif": exif} if exif is not None else {}
    return saved(first, "MPO", save_all=True, append_images=[second], **params)


def test_mpo_from_a_phone_is_accepted_as_its_primary_frame():
    data = mpo()
    assert Image.open(io.BytesIO(data)).format == "MPO" and data[:2] == b"\xff\xd8"
    out = process(data)
    assert (out.width, out.height) == (40, 30)
    assert near(pixel(out.full, (20, 15)), RED)


def test_mpo_orientation_applied_and_metadata_removed():
    exif = spy_exif()
    exif[0x0112] = 6  # rotate 90
    data = mpo(exif)
    assert b"SpyCam" in data
    out = process(data)
    assert (out.width, out.height) == (30, 40)
    for blob in (out.full, out.thumb):
        assert b"SpyCam" not in blob and b"Exif" not in blob and b"MPF" not in blob


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_exif_and_text_removed_from_every_format(fmt):
    params: dict[str, object] = {"exif": spy_exif()}
    if fmt == "PNG":
        from PIL import PngImagePlugin

        text = PngImagePlugin.PngInfo()
        text.add_text("Comment", "SpyCam private note")
        params["pnginfo"] = text
    data = saved(Image.new("RGB", (16, 16), RED), fmt, **params)
    assert b"SpyCam" in data
    out = process(data)
    for blob in (out.full, out.thumb):
        assert b"SpyCam" not in blob and b"Exif" not in blob


def test_animated_gif_uses_its_first_frame():
    frames = [Image.new("P", (10, 10), i) for i in (1, 2)]
    for frame in frames:
        frame.putpalette([0, 0, 0, *RED, *GREEN] + [0, 0, 0] * 253)
    data = saved(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert near(pixel(process(data).full, (5, 5)), RED)


def test_other_formats_are_named_in_the_refusal():
    with pytest.raises(ValidationError, match="TIFF images are not accepted; use JPEG, PNG, WebP or GIF"):
        process(saved(Image.new("RGB", (4, 4)), "TIFF"))
