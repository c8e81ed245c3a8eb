"""Image re-encoding with Pillow: every upload is decoded and re-encoded.

Re-encoding from raw pixels drops EXIF, XMP, ICC, comments and anything else a
file may carry (camera serials, GPS positions). Orientation is applied to the
pixels first so photos still show the right way up.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import PayloadTooLarge, ValidationError

FORMATS = {"JPEG", "PNG", "WEBP", "GIF"}
# JPEG decodes straight to 1/2..1/8 scale (draft), so big camera photos are cheap;
# other formats decode at full size: 25 MP RGBA is about 100 MB.
MAX_PIXELS = {"JPEG": 120_000_000}
MAX_PIXELS_OTHER = 25_000_000
THUMB_SIDE = 480
QUALITY = 85


@dataclass(frozen=True)
class Processed:
    id: str
    full: bytes
    thumb: bytes
    width: int
    height: int


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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in FORMATS:
                raise ValidationError({"image": f"{img.format} images are not accepted; use JPEG, PNG, WebP or GIF"})
            limit = MAX_PIXELS.get(img.format or "", MAX_PIXELS_OTHER)
            if img.width * img.height > limit:
                raise ValidationError({"image": f"image has more than {limit // 1_000_000} million pixels"})
            if img.format == "JPEG":
                img.draft("RGB", (max_side, max_side))  # let the decoder scale down (1/2..1/8)
            img.load()
    except (
        UnidentifiedImageError,
        OSError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        SyntaxError,
        ValueError,
    ):
        raise ValidationError({"image": "not a readable image (JPEG, PNG, WebP or GIF)"}) from None
    # Shrink first, then rotate and convert: big uploads never get copied at full size.
    work: Image.Image = img.convert("RGBA") if img.mode in ("P", "1") else img
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
