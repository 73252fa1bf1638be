"""Build the training DatasetDict: formula lists -> canonical formulas -> rendered images -> parquet splits.

    python -m data.prepare --formulas ../shared/data/formulas --output datasets/im2latex [--max-train 200000]
        [--train-style varied|wide] [--exclude SET ...] [--image-format g4] [--eval-image-format png] [--coverage 5]
        [--spacing 0.5 [--spacing-style typed] [--spacing-font cm]]

Splits: train (arXiv, books, Q&A, CROHME train and the im2latex-100k train sample, rendered in varied styles:
`--train-style`, `data.render`),
validation (im2latex-100k validation) and test (im2latex-100k test), both in the Deng et al. look. Columns: `image`
(datasets `Image`), `formula` (canonical token form), `source` and `style`. `datasets.load_dataset(OUTPUT)` reads it.
No test or validation formula is in train (compared with all whitespace removed): the build fails if one is.
`--exclude` keeps the formulas of other built datasets out of train as well (a generalisation set built before).

Train also gets short `coverage` formulas (`data.coverage`): every command and character of the training
vocabulary alone and in a few small contexts, `--coverage` times each, because people screenshot single symbols.
`--spacing` gives a fraction of train formulas hand spacing commands (`data.spacing`), as im2latex-100k's are typed;
`--spacing-style typed` spaces them as its authors do (one command a formula mostly, runs such as `~ ~ ~`);
`--spacing-font cm` renders the spaced formulas in Computer Modern, whose widths the benchmark's spacing has.
`--formulas-only` writes only train's formulas, unrendered (`data/train-formulas.parquet`), for
`data.generalization --dataset` to exclude a build's formulas without the build.
Images are stored as `data.storage` writes them: train as bilevel CCITT Group 4 (`g4`, ~450 bytes an image of the
training mix, ~150 for a coverage formula), validation and test as grayscale PNG (`png`, the benchmark's look,
exactly). Every column is zstd-compressed: a training row (image, formula, source, style) took 406 bytes in the
full build (149,554 rows, 57.9 MB), so about 165 K fit in 64 MiB.

`summary.json` counts each split's images, bytes and skipped formulas per reason, and its images and skips per font:
a font that wrote no image (its package missing) is logged as an error and listed under `fonts_without_images`.
"""

import argparse
import json
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, Features, Image, Value

from .coverage import coverage_formulas
from .normalize import canonical, normalize
from .render import STYLES, RenderResult, RenderStyle, render
from .spacing import SPACING_STYLES
from .storage import FORMATS, encode_image

logger = logging.getLogger(__name__)

MAX_TOKENS = 150  # the longest im2latex-100k formulas have 150 tokens
TRAIN_LISTS = {
    "arxiv-display": ["arxiv/display.txt"],
    "arxiv-inline": ["arxiv/inline.txt"],
    "books-display": ["books/*_display.txt"],
    "books-inline": ["books/*_inline.txt"],
    "qa-display": ["qa/*_display.txt"],
    "qa-inline": ["qa/*_inline.txt"],
    "crohme": ["crohme/crohme_train_2013_2014.txt"],
    "im2latex-train": ["im2latex-100k/train_sample.txt"],
}
# Share of the training split per source: display formulas look like the benchmark, inline ones like the short
# snippets people screenshot.
TRAIN_MIX = {
    "arxiv-display": 0.40,
    "arxiv-inline": 0.20,
    "books-display": 0.10,
    "books-inline": 0.08,
    "qa-display": 0.05,
    "qa-inline": 0.07,
    "crohme": 0.05,
    "im2latex-train": 0.05,
}
BENCHMARK_LISTS = {"validation": "im2latex-100k/validation.txt", "test": "im2latex-100k/test.txt"}
FEATURES = Features(
    {"image": Image(), "formula": Value("string"), "source": Value("string"), "style": Value("string")}
)


def squash(formula: str) -> str:
    """The comparison key for overlap checks of a formula already in the canonical form: it without whitespace."""
    return "".join(formula.split())


def overlap_key(formula: str) -> str:
    """`squash` of a formula in any form: a raw benchmark line, or one normalised by an older version of
    `data.normalize` (a built dataset), compares alike with one normalised now."""
    return squash(canonical(formula))


def read_lines(root: Path, patterns: list[str]) -> Iterator[str]:
    paths = sorted(p for pattern in patterns for p in root.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"no formula list matches {patterns} under {root}")
    for path in paths:
        yield from path.read_text(encoding="utf-8").splitlines()


def canonical_formulas(root: Path, source: str, stats: Counter) -> list[str]:
    """Normalise one source's formulas, dropping empty, failing and over-long ones (counted in `stats`)."""
    kept = []
    for line in read_lines(root, TRAIN_LISTS[source]):
        if not line.strip():
            stats["empty"] += 1
            continue
        try:
            formula = normalize(line)
        except ValueError:
            stats["not normalisable"] += 1
            continue
        if not formula or len(formula.split()) > MAX_TOKENS:
            stats["too long" if formula else "empty"] += 1
            continue
        kept.append(formula)
    return kept


def dataset_formulas(dataset: Path) -> set[str]:
    """The `overlap_key` of every formula in a prepared dataset's parquet shards (built by any version)."""
    files = sorted(dataset.glob("data/*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet shards under {dataset / 'data'}: build it with `python -m data.prepare`")
    return {
        overlap_key(formula)
        for path in files
        for formula in pq.read_table(path, columns=["formula"])["formula"].to_pylist()
    }


def training_formulas(
    root: Path, benchmark_keys: set[str], max_train: int, seed: int, excluded_keys: set[str] = frozenset()
) -> tuple[list[tuple[str, str]], Counter]:
    """(formula, source) pairs for the train split: unique, free of benchmark and excluded formulas, mixed per
    `TRAIN_MIX`; and the counts of lines left out (empty, not normalisable, too long, duplicate, benchmark or
    excluded formula)."""
    rng = random.Random(seed)
    seen = benchmark_keys | excluded_keys
    stats: Counter = Counter()
    pools = {}
    for source in TRAIN_LISTS:
        pool = []
        for formula in canonical_formulas(root, source, stats):
            key = squash(formula)
            if key in benchmark_keys:
                stats["benchmark formula removed"] += 1
            elif key in excluded_keys:
                stats["excluded formula removed"] += 1
            elif key not in seen:
                seen.add(key)
                pool.append(formula)
            else:
                stats["duplicate"] += 1
        rng.shuffle(pool)
        pools[source] = pool
        logger.info("%s: %d unique formulas", source, len(pool))
    chosen = []
    for source, share in TRAIN_MIX.items():
        chosen += [(formula, source) for formula in pools[source][: round(share * max_train)]]
    rng.shuffle(chosen)
    logger.info("train formulas: %d chosen; skipped: %s", len(chosen), dict(stats))
    return chosen, stats


def with_spacing(
    train: list[tuple[str, str]], fraction: float, seed: int, held_out_keys: set[str], style: str = "scattered"
) -> tuple[list[tuple[str, str]], int]:
    """`train` with about `fraction` of its formulas given hand spacing, and how many formulas were changed:
    ``scattered``, 1-3 commands each (`data.spacing.add_spacing`); ``typed``, as im2latex-100k's authors type
    (`data.spacing.add_typed_spacing`). A formula whose spaced form is a held-out one stays as it was."""
    rng = random.Random(seed)
    spaced, changed = [], 0
    for formula, source in train:
        if rng.random() < fraction:
            new = SPACING_STYLES[style](formula, rng)
            if new != formula and squash(new) not in held_out_keys:
                formula, changed = new, changed + 1
        spaced.append((formula, source))
    return spaced, changed


def in_computer_modern(style: str, formulas: set[str]) -> Callable[[int, str], RenderStyle]:
    """The train style `style` (a name in `data.render.STYLES`), except that `formulas` are rendered in Computer
    Modern, the benchmark's font, at the size and resolution `style` draws for them. Hand spacing is told apart by
    width against the text font's word space (``~``): at 12 pt and 200 dpi Computer Modern makes ``~`` 11 px and
    ``\\;`` 9, mathpazo 9 and 9, txfonts 8 and 10, so the benchmark's widths are taught in the benchmark's font."""
    choose = STYLES[style]

    def pick(index: int, formula: str) -> RenderStyle:
        chosen = choose(index, formula)
        return replace(chosen, font="") if formula in formulas else chosen

    return pick


def skip_example(formula: str, result: RenderResult) -> str:
    """A skipped formula and its error, shortened, as `summary.json` shows one example per reason or font."""
    return f"{formula[:80]!r}: {(result.error or '')[:160]}"


class FontTally:
    """Images and skips per font over a split's render results (Computer Modern is ``"cm"``).

    A font that renders nothing (its package missing: `wide` needs texlive-fonts-extra and lmodern) would only thin
    a split out silently; `report` logs it as an error and lists it under ``"fonts_without_images"``.
    """

    def __init__(self) -> None:
        self.counts: defaultdict[str, Counter] = defaultdict(Counter)
        self.examples: dict[str, str] = {}

    def add(self, formula: str, result: RenderResult) -> None:
        font = result.style.font or "cm"
        self.counts[font]["images" if result.image is not None else "skipped"] += 1
        if result.image is None:
            self.examples.setdefault(font, skip_example(formula, result))

    def report(self, name: str) -> dict:
        """``{"fonts": {font: {"images", "skipped"}}, "fonts_without_images": {font: example error}}``."""
        fonts = {font: {"images": c["images"], "skipped": c["skipped"]} for font, c in sorted(self.counts.items())}
        dead = {font: self.examples[font] for font, counts in fonts.items() if not counts["images"]}
        for font, example in dead.items():
            skips = fonts[font]["skipped"]
            logger.error(
                "%s: font %r wrote none of its %d images (is it installed?), e.g. %s", name, font, skips, example
            )
        return {"fonts": fonts, "fonts_without_images": dead}


def write_split(
    formulas: list[tuple[str, str]],
    style: str | Callable[[int, str], RenderStyle],
    folder: Path,
    name: str,
    workers: int,
    chunk: int,
    image_format: str = "g4",
) -> dict:
    """Render a split in chunks (bounded memory), one parquet shard per chunk, images stored in `image_format`
    (`data.storage`). Formulas that are refused or that TeX cannot render are skipped.

    Returns:
        ``{"images": n, "skipped": {reason: {"count", "example"}}}`` and `FontTally.report`'s ``"fonts"`` and
        ``"fonts_without_images"``.
    """
    skipped: dict[str, dict] = {}
    fonts = FontTally()
    folder.mkdir(parents=True, exist_ok=True)
    shards = max(1, -(-len(formulas) // chunk))
    written = 0
    for shard in range(shards):
        part = formulas[shard * chunk : (shard + 1) * chunk]
        rows = {"image": [], "formula": [], "source": [], "style": []}
        results = render([formula for formula, _ in part], style=style, workers=workers)
        for (formula, source), result in zip(part, results, strict=True):
            fonts.add(formula, result)
            if result.image is None:
                entry = {"count": 0, "example": skip_example(formula, result)}
                skipped.setdefault(result.skip_reason, entry)["count"] += 1
                continue
            rows["image"].append({"bytes": encode_image(result.image, image_format), "path": None})
            rows["formula"].append(formula)
            rows["source"].append(source)
            rows["style"].append(json.dumps(asdict(result.style)))
        write_shard(rows, folder / f"{name}-{shard:05d}-of-{shards:05d}.parquet")
        written += len(rows["image"])
    for reason, entry in skipped.items():
        logger.warning("%s: %d skipped (%s), e.g. %s", name, entry["count"], reason, entry["example"])
    return {"images": written, "skipped": skipped, **fonts.report(name)}


def write_shard(rows: dict[str, list], path: Path) -> None:
    """Write columns (`FEATURES`) as one parquet shard that `datasets.load_dataset` reads, images decoded."""
    write_table(Dataset.from_dict(rows, features=FEATURES).data.table, path)


def write_table(table: pa.Table, path: Path) -> None:
    """Write a table of dataset rows as one parquet shard.

    pyarrow directly, because `Dataset.to_parquet` fixes snappy. zstd (level 19) on every column, the image bytes
    included: each G4 image repeats the same TIFF header, and 2,000 training rows shrank from 497 to 389 bytes each.
    The table's schema carries the features, so `load_dataset` decodes the image column.
    """
    pq.write_table(table, str(path), compression="zstd", compression_level=19)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formulas", type=Path, required=True, help="folder of formula lists (see SOURCES.md)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--max-train", type=int, default=200_000)
    parser.add_argument("--max-eval", type=int, default=None, help="cap validation and test (for quick builds)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=5000, help="formulas rendered per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--exclude",
        type=Path,
        nargs="+",
        default=[],
        help="built datasets (a generalisation set) whose formulas train must not hold",
    )
    parser.add_argument(
        "--train-style",
        choices=sorted(set(STYLES) - {"deng"}),
        default="varied",
        help="how train is rendered (data.render)",
    )
    parser.add_argument("--image-format", choices=FORMATS, default="g4", help="how train images are stored")
    parser.add_argument("--eval-image-format", choices=FORMATS, default="png", help="validation and test images")
    parser.add_argument("--coverage", type=int, default=5, help="short formulas per vocabulary symbol (0: none)")
    parser.add_argument(
        "--spacing",
        type=float,
        default=0.0,
        help="fraction of train formulas given hand spacing commands before rendering (data.spacing)",
    )
    parser.add_argument(
        "--spacing-style",
        choices=sorted(SPACING_STYLES),
        default="scattered",
        help="scattered: 1-3 commands a formula; typed: as im2latex-100k's authors type them, runs included",
    )
    parser.add_argument(
        "--spacing-font",
        choices=["train", "cm"],
        default="train",
        help="train: spaced formulas rendered like the rest of train; cm: in Computer Modern, the benchmark's font",
    )
    parser.add_argument(
        "--formulas-only",
        action="store_true",
        help="write train's formulas, without rendering, to OUTPUT/data/train-formulas.parquet and stop: what "
        "`data.generalization --dataset` excludes, in minutes rather than a full build's half hour",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.formulas.is_dir():
        parser.error(f"formula folder {args.formulas} does not exist")
    if not 0.0 <= args.spacing <= 1.0:
        parser.error(f"--spacing must be a fraction in [0, 1], got {args.spacing}")
    if not args.spacing and (args.spacing_style != "scattered" or args.spacing_font != "train"):
        parser.error("--spacing-style and --spacing-font shape hand spacing: give --spacing F (0 < F <= 1) too")
    began = time.time()
    summary: dict = {}

    benchmark = {
        split: [line for line in read_lines(args.formulas, [name]) if line.strip()]
        for split, name in BENCHMARK_LISTS.items()
    }
    # every benchmark formula stays out of train, also those that --max-eval leaves out of the built splits
    benchmark_keys = {overlap_key(formula) for formulas in benchmark.values() for formula in formulas}
    excluded_keys: set[str] = set()
    for dataset in args.exclude:
        held_out = dataset_formulas(dataset)
        logger.info("excluding the %d formulas of %s from train", len(held_out), dataset)
        excluded_keys |= held_out
    train, selection_skipped = training_formulas(
        args.formulas, benchmark_keys, args.max_train, args.seed, excluded_keys
    )
    summary["train_lines_skipped"] = dict(selection_skipped)
    held_out_keys = benchmark_keys | excluded_keys
    if args.coverage:
        exclude = held_out_keys | {squash(formula) for formula, _ in train}
        coverage = coverage_formulas([formula for formula, _ in train], args.coverage, args.seed, exclude)
        logger.info("coverage: %d short formulas added (%d per symbol)", len(coverage), args.coverage)
        train += [(formula, "coverage") for formula in coverage]
        summary["coverage_formulas"] = len(coverage)
        random.Random(args.seed).shuffle(train)
    train_style: str | Callable[[int, str], RenderStyle] = args.train_style
    if args.spacing:
        unspaced = train
        train, spaced = with_spacing(train, args.spacing, args.seed, held_out_keys, args.spacing_style)
        logger.info("spacing: %d train formulas given hand spacing commands (%s)", spaced, args.spacing_style)
        summary.update(spacing_formulas=spaced, spacing_style=args.spacing_style, spacing_font=args.spacing_font)
        if args.spacing_font == "cm":
            changed = {new for (old, _), (new, _) in zip(unspaced, train, strict=True) if new != old}
            train_style = in_computer_modern(args.train_style, changed)
    leaked = [formula for formula, _ in train if squash(formula) in held_out_keys]
    if leaked:
        raise RuntimeError(f"{len(leaked)} benchmark or excluded formulas in train, e.g. {leaked[0]!r}")

    folder = args.output / "data"
    folder.mkdir(parents=True, exist_ok=True)
    if args.formulas_only:
        table = pa.table({"formula": [formula for formula, _ in train], "source": [source for _, source in train]})
        write_table(table, folder / "train-formulas.parquet")
        logger.info("wrote the %d train formulas, not rendered, to %s", len(train), folder / "train-formulas.parquet")
        return
    splits = {"train": (train, train_style, args.image_format)}
    splits.update(
        {
            name: ([(f, "im2latex-100k") for f in formulas[: args.max_eval]], "deng", args.eval_image_format)
            for name, formulas in benchmark.items()
        }
    )
    for name, (formulas, style, image_format) in splits.items():
        report = write_split(formulas, style, folder, name, args.workers, args.chunk, image_format)
        count, size = report["images"], sum(path.stat().st_size for path in folder.glob(f"{name}-*.parquet"))
        summary[name] = {"images": count, "bytes": size, "bytes_per_image": round(size / max(count, 1))}
        summary[name].update(image_format=image_format, **{k: v for k, v in report.items() if k != "images"})
        logger.info("%s: %d images, %.1f MB, %d bytes per image", name, count, size / 2**20, size / max(count, 1))
    summary["seconds"] = round(time.time() - began)
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("done in %d s: %s", summary["seconds"], summary)


if __name__ == "__main__":
    main()
