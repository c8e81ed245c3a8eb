"""Image re-encoding with Pillow: every upload is decoded and re-encoded.

Re-encoding from raw pixels drops EXIF, XMP, ICC, comments and anything else a
file may carry (camera serials, GPS positions). Orientation is applied to the
pixels first so photos still show the right way up.

Size limits are ours, not Pillow's. ``Image.open`` would run Pillow's
decompression-bomb check (a warning over ``Image.MAX_IMAGE_PIXELS``, about 89.5
MP, an error over twice that) before we can apply a limit of our own, so files
are opened through the format plugins directly: that parses the header only,
our per-format limit decides with a message naming the size, and only then is
anything decoded. The decode itself never exceeds ``MAX_DECODE_PIXELS``, which
is stricter than Pillow's check, so ``Image.MAX_IMAGE_PIXELS`` is left as it is
for everything else in the process.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

from PIL import (
    GifImagePlugin,  # noqa: F401  (registers the format with Image.OPEN)
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,  # noqa: F401
    WebPImagePlugin,  # noqa: F401
)

from ..core.errors import PayloadTooLarge, ValidationError

FORMATS = ("JPEG", "PNG", "WEBP", "GIF")  # phones' MPO files arrive as JPEG: their first frame is a JPEG
FORMAT_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "GIF": "GIF"}
# A JPEG decoded in one pass goes straight to 1/2..1/8 scale (draft), so big camera
# photos are cheap. Everything else (other formats, progressive JPEGs, whose every
# coefficient libjpeg keeps) decodes at full size: 25 MP RGBA is about 100 MB.
MAX_PIXELS_JPEG = 120_000_000
MAX_DECODE_PIXELS = 25_000_000
THUMB_SIDE = 480
QUALITY = 85
_JPEG_SCALES = (8, 4, 2, 1)
_JPEG_MP = f"{MAX_PIXELS_JPEG // 1_000_000} megapixels"
_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


@dataclass(frozen=True)
class Processed:
    id: str
    full: bytes
    thumb: bytes
    width: int
    height: int


def _unreadable() -> ValidationError:
    return ValidationError({"image": "not a readable image (JPEG, PNG, WebP or GIF)"})


def _megapixels(pixels: int) -> str:
    """Rounded up to 0.1, so an image just over a limit never reads as equal to it."""
    return f"{math.ceil(pixels / 100_000) / 10:g}"


def _pixels(size: tuple[int, int]) -> str:
    width, height = size
    return f"{width} x {height} pixels ({_megapixels(width * height)} megapixels)"


def _too_large(described: str, limit: int, kind: str) -> ValidationError:
    advice = "scale it down" if kind == "JPEG" else f"scale it down, or save it as a baseline JPEG (up to {_JPEG_MP})"
    return ValidationError(
        {"image": f"the image is {described}; the limit for {kind} is {_megapixels(limit)} megapixels: {advice}"}
    )


def _accepts(accept: Callable[[bytes], bool | str] | None, prefix: bytes) -> bool:
    """Pillow's check of a file's first bytes (a string answer means the codec is missing)."""
    try:
        found = accept(prefix) if accept else False
    except (struct.error, IndexError, ValueError):  # some checks assume 4+ bytes: a tiny file is no image
        return False
    return bool(found) and not isinstance(found, str)


def _webp_canvas(data: bytes) -> tuple[int, int] | None:
    """A WebP's canvas size from its header: Pillow's WebP opener allocates the canvas."""
    kind = data[12:16]
    if kind == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if kind == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _gif_extent(data: bytes) -> tuple[int, int] | None:
    """A GIF's size as Pillow's opener sets it: the screen, grown to hold the first frame."""
    if len(data) < 13:
        return None
    width, height, flags = struct.unpack("<HHB", data[6:11])
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while pos < len(data) and data[pos] == 0x21:  # extension blocks: label, then sub-blocks up to an empty one
        pos += 2
        while pos < len(data) and data[pos]:
            pos += data[pos] + 1
        pos += 1
    if data[pos : pos + 1] == b"," and pos + 9 <= len(data):  # the first image descriptor
        x, y, frame_width, frame_height = struct.unpack("<HHHH", data[pos + 1 : pos + 9])
        return max(width, x + frame_width), max(height, y + frame_height)
    return width, height


def _header_size(fmt: str, data: bytes) -> tuple[int, int] | None:
    """The size of formats whose Pillow opener allocates or checks it before we could."""
    if fmt == "WEBP":
        return _webp_canvas(data)
    return _gif_extent(data) if fmt == "GIF" else None


def _format_name(prefix: bytes) -> str | None:
    """The name of the format a file looks like, from its first bytes, for the refusal."""
    Image.init()
    return next((name for name, (_, accept) in Image.OPEN.items() if _accepts(accept, prefix)), None)


def _open_header(data: bytes) -> ImageFile.ImageFile:
    """Parse the header of an accepted format: size and mode known, no pixels decoded."""
    prefix = data[:16]
    for fmt in FORMATS:
        factory, accept = Image.OPEN[fmt]
        if not _accepts(accept, prefix):
            continue
        canvas = _header_size(fmt, data)
        if canvas and canvas[0] * canvas[1] > MAX_DECODE_PIXELS:
            raise _too_large(_pixels(canvas), MAX_DECODE_PIXELS, FORMAT_NAMES[fmt])
        try:
            return factory(io.BytesIO(data), "")
        except (SyntaxError, OSError, ValueError, IndexError, TypeError, EOFError, struct.error) as exc:
            raise _unreadable() from exc  # what Pillow's parser tripped on, for a developer
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # a header misread above
            over = f"over {_megapixels(Image.MAX_IMAGE_PIXELS or 0)} megapixels"
            raise _too_large(over, MAX_DECODE_PIXELS, FORMAT_NAMES[fmt]) from exc
    name = _format_name(prefix)
    if name is None:
        raise _unreadable()
    raise ValidationError({"image": f"{name} images are not accepted; use JPEG, PNG, WebP or GIF"})


def _first_scan_has_all_components(data: bytes, components: int) -> bool:
    """Whether a JPEG's first scan is interleaved: libjpeg then decodes it in one pass."""
    pos = 2  # after SOI
    while pos + 5 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0xDA:  # SOS: the number of components in this scan follows its length
            return data[pos + 4] == components
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return False


def _limit(img: ImageFile.ImageFile, data: bytes) -> tuple[int, str]:
    """The pixel limit for this file and the name it is given in the message."""
    if isinstance(img, JpegImagePlugin.JpegImageFile):  # JPEG and MPO
        one_pass = not img.info.get("progressive") and _first_scan_has_all_components(data, len(img.getbands()))
        return (MAX_PIXELS_JPEG, "JPEG") if one_pass else (MAX_DECODE_PIXELS, "progressive JPEG")
    return MAX_DECODE_PIXELS, FORMAT_NAMES.get(img.format or "", img.format or "this format")


def _jpeg_scale(size: tuple[int, int], max_side: int) -> int:
    """The JPEG decoder's downscale: as small as max_side allows, at least enough to fit the decode limit."""
    width, height = size
    longest = max(width, height)
    quality = next(s for s in _JPEG_SCALES if longest // s >= min(max_side, longest))
    memory = next((s for s in reversed(_JPEG_SCALES) if -(-width // s) * -(-height // s) <= MAX_DECODE_PIXELS), 8)
    return max(quality, memory)


def _decode(data: bytes, max_side: int) -> ImageFile.ImageFile:
    img = _open_header(data)
    limit, kind = _limit(img, data)
    if img.width * img.height > limit:
        raise _too_large(_pixels(img.size), limit, kind)
    if isinstance(img, JpegImagePlugin.JpegImageFile):
        scale = _jpeg_scale(img.size, max_side)
        img.draft("RGB", (max(1, img.width // scale), max(1, img.height // scale)))
    if img.width * img.height > MAX_DECODE_PIXELS:  # after the draft: what will really be decoded
        raise _too_large(f"{_pixels(img.size)} even when decoded at reduced size", MAX_DECODE_PIXELS, kind)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, IndexError, TypeError, EOFError, struct.error) as exc:
        raise _unreadable() from exc
    return img


def to_8bit(img: Image.Image) -> Image.Image:
    """16- and 32-bit integer greys scaled to 8-bit L (a plain convert clips them to white)."""
    if img.mode not in _INTEGER_MODES:
        return img
    return img.convert("I").point(lambda v: v / 257).convert("L")


def _with_alpha(img: Image.Image) -> Image.Image:
    """Palettes, bilevel and single-colour transparency (tRNS) become RGBA before scaling."""
    if img.mode in ("P", "PA", "1") or (img.mode in ("L", "RGB") and "transparency" in img.info):
        return img.convert("RGBA")
    return img


def _encode(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=QUALITY, optimize=True, progressive=True)
    return out.getvalue()


def _bare_rgb(img: Image.Image) -> Image.Image:
    """A new image holding only pixels: no info dict, no EXIF, no palette."""
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    rgb = img.convert("RGB")
    return Image.frombytes("RGB", rgb.size, rgb.tobytes())


def process(data: bytes, *, max_bytes: int, max_side: int) -> Processed:
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"image is {len(data)} bytes; the limit is {max_bytes}")
    img = _decode(data, max_side)
    # Shrink first, then rotate and convert: big uploads never get copied at full size.
    work = _with_alpha(to_8bit(img))
    work.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    clean = _bare_rgb(ImageOps.exif_transpose(work) or work)
    full = _encode(clean)
    thumb_img = clean.copy()
    thumb_img.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    return Processed(
        id=hashlib.sha256(full).hexdigest(),
        full=full,
        thumb=_encode(thumb_img),
        width=clean.width,
        height=clean.height,
    )
