"""Measure PNG decode and augmentation throughput on one core.

The GPU trainer consumes about 6,000 images/s; spread over 16 data-loading cores that is about 400
augmented images/s per core. This script prints images/s for decode alone, augment alone, and both.

    python -m bench.augment_speed                      # synthetic formula-like images
    python -m bench.augment_speed --images DIR         # PNGs from a folder
    python -m bench.augment_speed --write-samples DIR  # also save the synthetic PNGs (e.g. for the grid)
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from any folder

from data.augment import AugmentConfig, augment  # noqa: E402

# Glyphs the default PIL font has; [:6] serve as numerators, [10:15] as scripts.
_PIECES = list("xyab=+-()fkn210cm|")


def synthetic_formula(rng: random.Random) -> Image.Image:
    """Draw a formula-like line (symbols, scripts, fractions), black on white, about 60x400 px."""
    size = rng.randint(26, 36)
    big, small = ImageFont.load_default(size=size), ImageFont.load_default(size=int(size * 0.65))
    image = Image.new("L", (rng.randint(300, 640), rng.randint(int(size * 1.8), int(size * 2.8))), 255)
    draw = ImageDraw.Draw(image)
    x, base = 8, image.height // 2 - size // 2
    while x < image.width - 3 * size:
        if rng.random() < 0.15:  # fraction: numerator over a bar over a denominator
            num, den = rng.choice(_PIECES[:6]), rng.choice(_PIECES[:6]) + rng.choice(_PIECES[10:15])
            width = int(draw.textlength(den, font=small)) + 6
            draw.text((x + 3, base - size * 0.35), num, font=small, fill=0)
            draw.line((x, base + size * 0.45, x + width, base + size * 0.45), fill=0, width=max(1, size // 14))
            draw.text((x + 3, base + size * 0.5), den, font=small, fill=0)
            x += width + 4
            continue
        glyph = rng.choice(_PIECES)
        draw.text((x, base), glyph, font=big, fill=0)
        x += int(draw.textlength(glyph, font=big)) + 2
        if rng.random() < 0.3:
            dy = -size * 0.3 if rng.random() < 0.5 else size * 0.55
            script = rng.choice(_PIECES[10:15])
            draw.text((x, base + dy), script, font=small, fill=0)
            x += int(draw.textlength(script, font=small)) + 2
    # Crop to the ink plus a few pixels, like the rendered dataset.
    left, top, right, bottom = Image.eval(image, lambda v: 255 - v).getbbox() or (0, 0, 1, 1)
    return image.crop((max(0, left - 4), max(0, top - 4), right + 4, bottom + 4))


def _png_bytes(images: list[Image.Image]) -> list[bytes]:
    out = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def _rate(label: str, run: Callable[[], None], count: int, repeats: int) -> None:
    run()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    elapsed = time.perf_counter() - start
    print(f"{label:<18} {count * repeats / elapsed:8.0f} images/s per core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, help="folder of PNGs to use instead of synthetic images")
    parser.add_argument("--count", type=int, default=300, help="synthetic images to draw")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--write-samples", type=Path, help="save the synthetic images here as PNGs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core, as in one DataLoader worker

    if args.images is not None and args.images.is_dir():
        blobs = [path.read_bytes() for path in sorted(args.images.glob("*.png"))]
        if not blobs:
            raise FileNotFoundError(f"no PNG images in {args.images}")
    else:
        rng = random.Random(args.seed)
        images = [synthetic_formula(rng) for _ in range(args.count)]
        if args.write_samples is not None:
            args.write_samples.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                image.save(args.write_samples / f"formula_{i:04d}.png")
        blobs = _png_bytes(images)

    def decode(blob: bytes) -> Image.Image:
        image = Image.open(io.BytesIO(blob))
        image.load()
        return image

    decoded = [decode(blob) for blob in blobs]
    sizes = np.array([image.size for image in decoded])
    print(f"{len(blobs)} images, mean size {sizes[:, 1].mean():.0f}x{sizes[:, 0].mean():.0f} (HxW)")
    config = AugmentConfig(strength=args.strength)
    generator = np.random.default_rng(args.seed)
    _rate("decode", lambda: [decode(blob) for blob in blobs], len(blobs), args.repeats)
    _rate("augment", lambda: [augment(image, config, generator) for image in decoded], len(blobs), args.repeats)
    _rate(
        "decode + augment",
        lambda: [augment(decode(blob), config, generator) for blob in blobs],
        len(blobs),
        args.repeats,
    )
    everything = AugmentConfig(**{f: 1.0 for f in config.__dataclass_fields__ if f.startswith("p_")})
    _rate("augment, all ops", lambda: [augment(i, everything, generator) for i in decoded], len(blobs), 1)


if __name__ == "__main__":
    main()
