"""How rendered formula images are stored in the dataset's `image` column: the bytes for one image, per format.

A GPU host receives at most 64 MiB per transfer, so the training split is stored densely. Measured on 2,982
pdflatex renderings of training formulas in the varied style (120-240 dpi):

    format  bytes/image  decode/s (one core)  what the processor sees: mean |prepare(orig) - prepare(stored)|
    png           2,318                4,500  identical: 8-bit grayscale, as rendered
    png1            585                6,700  bilevel (threshold 128): anti-aliasing lost, 0.020 (0.35 of ink mass)
    g4              423                3,400  the same bilevel pixels, CCITT Group 4 in a minimal TIFF

Group 4 is the fax codec for bilevel images; Pillow reads and writes it (libtiff), so `datasets` decodes a `g4`
row like any image file, as a PIL image of mode ``"1"`` that `data.augment` and the image processor turn to
grayscale. Pillow's own TIFF carries 9 tags (126 bytes before any pixel); :func:`encode_image` keeps the 6 that a
bilevel G4 strip needs (width, height, compression, photometric interpretation, strip offset and byte count),
which saves 40 bytes an image. Lossless WebP of the same bilevel pixels is no smaller (~450 bytes).
"""

from __future__ import annotations

import io
import struct

from PIL import Image

__all__ = ["FORMATS", "encode_image", "to_bilevel"]

FORMATS = ("png", "png1", "g4")
BILEVEL_THRESHOLD = 128  # a gray level below this is ink

_TIFF_SHORT, _TIFF_LONG = 3, 4
_G4, _BLACK_IS_ZERO = 4, 1


def to_bilevel(image: Image.Image, threshold: int = BILEVEL_THRESHOLD) -> Image.Image:
    """A grayscale image as mode ``"1"``: pixels darker than `threshold` black, the rest white."""
    gray = image if image.mode == "L" else image.convert("L")
    return gray.point(lambda v: 255 if v >= threshold else 0).convert("1", dither=Image.Dither.NONE)


def _minimal_g4_tiff(image: Image.Image) -> bytes:
    """Encode a mode ``"1"`` image as a one-strip Group 4 TIFF with only the tags a reader needs."""
    buffer = io.BytesIO()
    # One strip for the whole image: the minimal header below describes exactly one.
    image.save(buffer, format="TIFF", compression="group4", strip_size=2**31 - 1)
    with Image.open(io.BytesIO(buffer.getvalue())) as tiff:
        (offset,), (count,) = tiff.tag_v2[273], tiff.tag_v2[279]
        photometric = tiff.tag_v2.get(262, _BLACK_IS_ZERO)
    strip = buffer.getvalue()[offset : offset + count]
    size_type = _TIFF_SHORT if max(image.size) < 2**16 else _TIFF_LONG
    tags = [  # (tag, type, value), ascending tag order as TIFF requires
        (256, size_type, image.width),
        (257, size_type, image.height),
        (259, _TIFF_SHORT, _G4),
        (262, _TIFF_SHORT, photometric),
        (273, _TIFF_LONG, 8),  # the strip follows the 8-byte file header
        (279, _TIFF_LONG, len(strip)),
    ]
    directory = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *tag[:2], 1, tag[2]) for tag in tags)
    return struct.pack("<2sHI", b"II", 42, 8 + len(strip)) + strip + directory + b"\0\0\0\0"


def encode_image(image: Image.Image, image_format: str = "g4") -> bytes:
    """The stored bytes of one rendered image.

    Args:
        image: a rendering (PIL, any mode; grayscale expected).
        image_format: ``"png"`` (8-bit grayscale PNG, lossless), ``"png1"`` (bilevel PNG) or ``"g4"`` (bilevel,
            CCITT Group 4 TIFF).

    Returns:
        An image file that `PIL.Image.open` (and so `datasets.Image`) reads.
    """
    if image_format not in FORMATS:
        raise ValueError(f"unknown image format {image_format!r}; choose one of {FORMATS}")
    if image_format == "g4":
        return _minimal_g4_tiff(to_bilevel(image))
    buffer = io.BytesIO()
    (to_bilevel(image) if image_format == "png1" else image.convert("L")).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
