"""Image size limits are ours, not Pillow's: huge JPEGs decode scaled, oversize files say so.

Huge test images are built without ever holding their pixels: a valid baseline JPEG is
one encoded strip repeated through restart markers, and PNG, GIF and WebP files only
need a header claiming the size, since the size is checked before anything is decoded.
"""

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from node.core.errors import ValidationError
from node.market import images

ROOT = Path(__file__).resolve().parents[2]


def big_flat_jpeg(width: int, height: int, colour=(90, 140, 200)) -> bytes:
    """A valid baseline JPEG of width x height, built from one 16-pixel strip.

    The strip is encoded with a restart marker after every MCU row. For a flat colour
    each restart interval is the same bytes (the DC prediction restarts too), so the
    interval is repeated with RST0..RST7 between and the frame header's height patched.
    """
    assert height % 16 == 0
    out = io.BytesIO()
    strip = Image.new("RGB", (width, 16), colour)
    strip.save(out, "JPEG", quality=90, subsampling="4:2:0", restart_marker_rows=1)
    data = out.getvalue()
    sof = data.index(b"\xff\xc0")
    sos = data.index(b"\xff\xda")
    scan = sos + 2 + struct.unpack(">H", data[sos + 2 : sos + 4])[0]
    interval = data[scan : data.rindex(b"\xff\xd9")]
    assert b"\xff\xd0" not in interval
    header = bytearray(data[:scan])
    header[sof + 5 : sof + 7] = struct.pack(">H", height)
    rows = height // 16
    body = b"".join(interval + bytes([0xFF, 0xD0 + i % 8]) for i in range(rows - 1)) + interval
    return bytes(header) + body + b"\xff\xd9"


def with_jpeg_size(data: bytes, width: int, height: int, sof: bytes = b"\xff\xc0") -> bytes:
    """A small JPEG whose frame header claims another size (only the header is read)."""
    at = data.index(sof)
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def gif_header(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("P", (1, 1)).save(out, "GIF")
    data = out.getvalue()
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


def gif_frame_outside_its_screen(width: int, height: int) -> bytes:
    """A 1 x 1 GIF whose first frame claims width x height: Pillow grows the image to hold it."""
    data = gif_header(1, 1)
    frame = data.index(b",")
    return data[: frame + 5] + struct.pack("<HH", width, height) + data[frame + 9 :]


def webp_header(width: int, height: int) -> bytes:
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + canvas
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def small_jpeg(**save) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(out, "JPEG", **save)
    return out.getvalue()


def process(data: bytes, max_side: int = 1600) -> images.Processed:
    return images.process(data, max_bytes=10**7, max_side=max_side)


def test_jpeg_between_pillows_bomb_limit_and_ours_is_accepted():
    # 100 MP: over Pillow's MAX_IMAGE_PIXELS (about 89.5 MP), under our 120 MP for JPEG.
    assert 100_000_000 > Image.MAX_IMAGE_PIXELS
    out = process(big_flat_jpeg(10000, 10000))
    assert (out.width, out.height) == (1600, 1600)
    r, g, b = Image.open(io.BytesIO(out.full)).getpixel((800, 800))
    assert abs(r - 90) < 8 and abs(g - 140) < 8 and abs(b - 200) < 8


def test_jpeg_at_our_limit_is_accepted():
    out = process(big_flat_jpeg(12000, 10000))  # exactly 120 MP
    assert (out.width, out.height) == (1600, 1333)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda: big_flat_jpeg(13000, 10000),
            "13000 x 10000 pixels (130 megapixels); the limit for JPEG is 120 megapixels",
        ),
        (
            lambda: with_jpeg_size(small_jpeg(), 12001, 10000),
            "(120.1 megapixels); the limit for JPEG is 120 megapixels",
        ),
        (lambda: png_header(100000, 100000), "(10000 megapixels); the limit for PNG is 25 megapixels"),
        (lambda: png_header(6000, 5000), "6000 x 5000 pixels (30 megapixels); the limit for PNG is 25 megapixels"),
        (lambda: gif_header(60000, 60000), "(3600 megapixels); the limit for GIF is 25 megapixels"),
        (lambda: gif_frame_outside_its_screen(60000, 60000), "(3600 megapixels); the limit for GIF is 25 megapixels"),
        (lambda: gif_frame_outside_its_screen(10000, 10000), "(100 megapixels); the limit for GIF is 25 megapixels"),
        (lambda: webp_header(16383, 16383), "(268.5 megapixels); the limit for WebP is 25 megapixels"),
        (lambda: webp_header(6000, 5000), "(30 megapixels); the limit for WebP is 25 megapixels"),
        (
            lambda: with_jpeg_size(small_jpeg(progressive=True), 6000, 5000, sof=b"\xff\xc2"),
            "(30 megapixels); the limit for progressive JPEG is 25 megapixels",
        ),
    ],
    ids=[
        "jpeg-130MP",
        "jpeg-just-over",
        "png-10GP",
        "png-30MP",
        "gif-3.6GP",
        "gif-frame-3.6GP",
        "gif-frame-100MP",
        "webp-268MP",
        "webp-30MP",
        "progressive",
    ],
)
def test_oversize_images_say_how_large_and_the_limit(make, expected):
    with pytest.raises(ValidationError) as caught:
        process(make())
    message = caught.value.fields["image"]
    assert expected in message
    assert "scale it down" in message and "not a readable image" not in message


def test_a_jpeg_whose_first_scan_is_not_interleaved_gets_the_whole_buffer_limit():
    # libjpeg keeps every coefficient of such a JPEG in memory, as for a progressive one.
    data = with_jpeg_size(small_jpeg(subsampling="4:4:4"), 6000, 5000)
    sos = data.index(b"\xff\xda")
    first_component = data[sos + 5 : sos + 7]
    one_component_scan = b"\xff\xda" + struct.pack(">HB", 8, 1) + first_component + b"\x00\x3f\x00"
    data = data[:sos] + one_component_scan + data[sos + 14 :]
    with pytest.raises(ValidationError, match="the limit for progressive JPEG is 25 megapixels"):
        process(data)


def test_jpeg_decode_stays_under_the_decode_limit_with_a_large_max_side():
    # 30 MP with max_side 20000: decoding at full size would be over the 25 MP decode limit,
    # so the JPEG decoder halves it and the result is smaller than max_side.
    out = process(big_flat_jpeg(10000, 3008), max_side=20000)
    assert (out.width, out.height) == (5000, 1504)


def test_small_non_jpeg_still_accepted_and_unreadable_still_says_so():
    out = io.BytesIO()
    Image.new("L", (5000, 5000), 255).save(out, "PNG")  # exactly 25 MP
    assert process(out.getvalue()).width == 1600
    with pytest.raises(ValidationError, match="not a readable image"):
        process(png_header(10, 10)[:30])


_MEASURE = """
import json, resource, sys
from pathlib import Path
from node.market import images
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sizes = []
for name in sys.argv[1:]:
    out = images.process(Path(name).read_bytes(), max_bytes=10**8, max_side=1600)
    sizes.append([out.width, out.height])
grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(json.dumps({"sizes": sizes, "grown_mb": grown_kb // 1024}))
"""


def test_huge_jpegs_decode_scaled_in_little_memory(tmp_path):
    # Decoded at full size these are 400 MB and 320 MB (Pillow keeps RGB as 4 bytes a pixel).
    square = tmp_path / "square.jpg"
    square.write_bytes(big_flat_jpeg(10000, 10000))
    wide = tmp_path / "wide.jpg"  # 80 MP, very wide: a square draft box would not scale it at all
    wide.write_bytes(big_flat_jpeg(40000, 2000))
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(square), str(wide)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(run.stdout)
    assert result["sizes"] == [[1600, 1600], [1600, 80]]
    assert result["grown_mb"] < 100, result


@pytest.mark.parametrize("data", [b"", b"B", b"BM", b"\x00\x00", b"\xff\xd8", b"GIF8", b"RIFF"])
def test_a_tiny_file_is_unreadable_not_a_crash(data: bytes) -> None:
    with pytest.raises(ValidationError) as caught:
        images.process(data, max_bytes=1 << 20, max_side=1600)
    assert "image" in caught.value.fields
