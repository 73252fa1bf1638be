"""Build the generalisation set: formulas in neither train nor the benchmark, in a look the model never trained on.

    python -m data.generalization --formulas ../shared/data/formulas --dataset datasets/im2latex \\
        --output datasets/im2latex-generalization [--count 2000]
    python evaluate.py --model models/im2latex-base --dataset datasets/im2latex-generalization --split test ...
    python -m data.generalization --restyle datasets/im2latex-generalization --style varied \\
        --output datasets/im2latex-generalization-varied

Formulas: the arXiv, books and Q&A lists, normalised like the training split, minus every formula of the built
dataset (`--dataset`: train, validation and test) and of the im2latex-100k benchmark lists (compared in the
canonical form with all whitespace removed, `overlap_key`), sampled per source in the training mix's proportions.

Look, chosen deterministically per image (`generalization_style`, `degrade`), each unlike the training styles:
bold or sans-serif math and the Charter, Utopia or Bookman text fonts (training: Computer Modern, Palatino, Times
and the tx/px fonts, normal math; the `wide` training style adds 18 fonts, none of these nor a near relative),
90-100 or 280-320 dpi (training: 120-240), and one of four degradations: none, coloured ink on a tinted background
saved as a low-quality JPEG, dark mode (light ink on a dark background), or blur plus noise (training sees grayscale
only). `summary.json` counts the styles and degradations, and the images and skips per font (a font that wrote
none is logged as an error, `data.prepare.FontTally`).

`--restyle SET --style varied` renders the formulas of a built set in the training styles instead (no degradation),
and `--style deng` in the benchmark's look: controls. What a model loses between a control and the set is the cost
of the unseen looks alone, not of the formulas.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import random
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from .prepare import (
    BENCHMARK_LISTS,
    TRAIN_MIX,
    FontTally,
    canonical_formulas,
    dataset_formulas,
    overlap_key,
    read_lines,
    squash,
    write_shard,
)
from .render import STYLES, RenderStyle, render

logger = logging.getLogger(__name__)

SOURCES = [source for source in TRAIN_MIX if source.split("-")[0] in ("arxiv", "books", "qa")]
FONTS = ("", "charter", "utopia", "bookman")
MATH_VERSIONS = ("bold", "sans", "normal")
DPI = (90, 100, 280, 320)
DEGRADATIONS = ("none", "color-jpeg", "dark-mode", "blur-noise")


def generalization_style(index: int, formula: str) -> RenderStyle:
    """A style outside the training mix, chosen deterministically from the index and formula."""
    digest = hashlib.sha256(f"generalization\0{index}\0{formula}".encode()).digest()
    return RenderStyle(
        font=FONTS[digest[0] % len(FONTS)],
        font_size=(10, 11, 12)[digest[1] % 3],
        display=digest[2] % 2 == 0,
        dpi=DPI[digest[3] % len(DPI)],
        fixed_cmex=False,
        math_version=MATH_VERSIONS[digest[4] % len(MATH_VERSIONS)],
    )


def degrade(image: Image.Image, kind: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """Degrade a grayscale rendering; return the encoded image file and its format (``"png"`` or ``"jpeg"``)."""
    gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0  # 1 = paper, 0 = ink
    if kind == "none":
        out, file_format = gray[..., None].repeat(3, axis=2), "png"
    elif kind == "color-jpeg":
        ink = rng.uniform(0.0, 0.45, size=3)  # a dark colour
        paper = rng.uniform(0.8, 1.0, size=3)  # a light tint
        out, file_format = gray[..., None] * paper + (1 - gray[..., None]) * ink, "jpeg"
    elif kind == "dark-mode":
        ink = rng.uniform(0.75, 1.0, size=3)
        paper = rng.uniform(0.05, 0.25, size=3)
        out, file_format = gray[..., None] * paper + (1 - gray[..., None]) * ink, "png"
    elif kind == "blur-noise":
        blurred = cv2.GaussianBlur(gray, (0, 0), sigmaX=rng.uniform(1.0, 1.6))
        noisy = blurred + rng.normal(0.0, rng.uniform(0.04, 0.08), size=gray.shape)
        out, file_format = noisy[..., None].repeat(3, axis=2), "png"
    else:
        raise ValueError(f"unknown degradation {kind!r}; choose one of {DEGRADATIONS}")
    rgb = Image.fromarray((np.clip(out, 0.0, 1.0) * 255).round().astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    if file_format == "jpeg":
        rgb.save(buffer, format="JPEG", quality=int(rng.integers(15, 35)))
    else:
        rgb.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue(), file_format


def generalization_formulas(root: Path, exclude: set[str], count: int, seed: int) -> list[tuple[str, str]]:
    """(formula, source) pairs from `SOURCES`, none of whose whitespace-free form is in `exclude`."""
    rng = random.Random(seed)
    total = sum(TRAIN_MIX[source] for source in SOURCES)
    chosen: list[tuple[str, str]] = []
    seen = set(exclude)
    for source in SOURCES:
        pool = canonical_formulas(root, source, Counter())
        rng.shuffle(pool)
        wanted = round(count * TRAIN_MIX[source] / total)
        for formula in pool:
            if len(chosen) >= count or wanted == 0:
                break
            key = squash(formula)
            if key not in seen:
                seen.add(key)
                chosen.append((formula, source))
                wanted -= 1
    rng.shuffle(chosen)
    return chosen


def set_formulas(folder: Path) -> list[tuple[str, str]]:
    """(formula, source) pairs of a built generalisation set, in its order."""
    files = sorted(folder.glob("data/test-*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"no test shards under {folder / 'data'}: build the set with `python -m data.generalization`"
        )
    tables = [pq.read_table(path, columns=["formula", "source"]) for path in files]
    return [
        pair
        for table in tables
        for pair in zip(table["formula"].to_pylist(), table["source"].to_pylist(), strict=True)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formulas", type=Path, help="folder of formula lists (see SOURCES.md)")
    parser.add_argument("--dataset", type=Path, help="the prepared dataset whose formulas to exclude")
    parser.add_argument(
        "--restyle", type=Path, metavar="SET", help="instead: render the formulas of the built set SET in --style"
    )
    parser.add_argument("--style", choices=sorted(STYLES), default="varied", help="the look --restyle renders in")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.restyle is not None:
        if args.formulas is not None or args.dataset is not None:
            parser.error("--restyle takes the formulas of a built set: give no --formulas or --dataset")
        formulas, look = set_formulas(args.restyle), STYLES[args.style]
    else:
        if args.formulas is None or args.dataset is None:
            parser.error("give --formulas and --dataset (or --restyle SET)")
        if not args.formulas.is_dir():
            parser.error(f"formula folder {args.formulas} does not exist")
        exclude = dataset_formulas(args.dataset)
        exclude |= {
            overlap_key(line) for name in BENCHMARK_LISTS.values() for line in read_lines(args.formulas, [name])
        }
        formulas, look = generalization_formulas(args.formulas, exclude, args.count, args.seed), generalization_style
    results = render([formula for formula, _ in formulas], style=look, workers=args.workers)

    rows: dict[str, list] = {"image": [], "formula": [], "source": [], "style": []}
    looks: Counter = Counter()
    fonts = FontTally()
    for index, ((formula, source), result) in enumerate(zip(formulas, results, strict=True)):
        fonts.add(formula, result)
        if result.image is None:
            looks[f"skipped ({result.skip_reason})"] += 1
            continue
        kind = "none" if args.restyle else DEGRADATIONS[index % len(DEGRADATIONS)]
        data, file_format = degrade(result.image, kind, np.random.default_rng([args.seed, index]))
        style = {**asdict(result.style), "degradation": kind, "file_format": file_format}
        looks.update([f"degradation {kind}", f"math {result.style.math_version}", f"font {result.style.font or 'cm'}"])
        looks.update([f"dpi {result.style.dpi}"])
        rows["image"].append({"bytes": data, "path": None})
        rows["formula"].append(formula)
        rows["source"].append(source)
        rows["style"].append(json.dumps(style))
    folder = args.output / "data"
    folder.mkdir(parents=True, exist_ok=True)
    write_shard(rows, folder / "test-00000-of-00001.parquet")
    summary = {"images": len(rows["image"]), "sources": Counter(rows["source"]), "looks": dict(sorted(looks.items()))}
    summary.update(fonts.report("the generalisation set"))
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("wrote %d images to %s: %s", len(rows["image"]), folder, summary)


if __name__ == "__main__":
    main()
