"""Score a saved im2latex model on a formula dataset: BLEU-4, token edit similarity, CER and exact match.

    python evaluate.py --model outputs/base --dataset data/im2latex --split test --output eval/base
    python evaluate.py --model outputs/tiny --dataset tests/fixtures/tiny_dataset --split test --max-samples 8 \\
        --num-beams 2 --output eval/tiny --min-bleu 0.5

Writes OUTPUT/metrics.json (the metrics, speed and run details) and OUTPUT/predictions.jsonl (one
`{"image", "reference", "prediction", "truncated", "enlarged"}` per example) and prints the metrics;
`enlarged_fraction` is the share of readings taken from the image enlarged (see `--min-glyph-height`, and
`Im2LatexImageProcessor.enlarged`); images with a noisy background are filtered first (see `--denoise-strength`, and
`Im2LatexImageProcessor.prepare`). `--check-compiles` renders
every prediction with pdflatex and adds `compile_fraction` (and a `compiles` field per prediction). `--image-match`
renders the references too and adds `image_exact_match`: the share of predictions that render to exactly the
reference's pixels, so that spellings TeX renders the same count as right (an `image_match` field per prediction;
references that do not render are left out). `--group-by FIELD`
also scores each value of FIELD apart (`metrics.json`'s `by`, and a table): a dataset column such as `source`, or
`COLUMN.KEY` for a key of a column of JSON objects, such as `style.dpi` or `style.degradation` in the sets that
`data.prepare` and `data.generalization` write. Exits with 1 when `--min-bleu` is not met, with 2 on a bad argument.

`--rescore RUN/predictions.jsonl` scores a run's saved predictions again instead of reading images, for instance
after the canonical form (`data.normalize`) changed: readings do not change with it, scores do. The run's details
(model, dataset, speed) come from the `metrics.json` beside the file; `--group-by` takes the fields the run stored.

    python evaluate.py --rescore eval/base/predictions.jsonl --output eval/base-rescored

This script's name is also the name of the `evaluate` library; `data.metrics` imports the library in a way that skips
this file (see `data.metrics._import_evaluate_library`), so import the library from there, never directly here.
"""

import argparse
import io
import json
import logging
import re
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import datasets
import torch
from datasets.exceptions import DatasetGenerationError
from PIL import Image as PILImage
from tqdm.auto import tqdm
from transformers import AutoProcessor

from data.dataset import load_formula_dataset
from data.metrics import compute_formula_metrics
from data.readings import read_readings
from modeling import Im2LatexForConditionalGeneration, InvalidImageError, group_token_ids, spacing_token_ids
from modeling.inference import read_formulas

logger = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


# Image processor settings that a command-line option of the same name overrides, and metrics.json records.
IMAGE_PROCESSOR_OPTIONS = ("min_glyph_height", "denoise_strength")


class UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


def check_source(source: str, what: str, marker: str | None = None) -> None:
    """Refuse a local path that does not exist (or lacks `marker`) before any library tries it as a Hub id."""
    path = Path(source)
    if path.exists():
        if marker is not None and not (path / marker).is_file():
            raise UsageError(f"{source} is not a saved {what} folder (no {marker})")
    elif not HUB_ID.match(source):
        raise UsageError(f"{what} folder {source} does not exist")


def load_model(source: str, device: str):
    try:
        model = Im2LatexForConditionalGeneration.from_pretrained(source)
        processor = AutoProcessor.from_pretrained(source)
    except (OSError, ValueError) as error:  # not on the Hub, offline, not an im2latex folder
        raise UsageError(f"could not load the model {source}: {str(error).strip().splitlines()[0]}") from error
    return model.to(device).eval(), processor


def load_examples(args: argparse.Namespace) -> datasets.Dataset:
    try:
        dataset = load_formula_dataset(args.dataset, args.split, args.image_column, args.formula_column)
    except (OSError, ValueError) as error:  # no such dataset, split or column
        raise UsageError(str(error).strip().splitlines()[0]) from error
    except DatasetGenerationError as error:  # a folder that is not a dataset
        cause = str(error.__cause__ or error).strip().splitlines()[0]
        raise UsageError(f"could not read the dataset {args.dataset} (is it a dataset folder?): {cause}") from error
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    if isinstance(dataset.features["image"], datasets.Image):
        # Undecoded {"path", "bytes"}: the image processor reads the bytes itself, and the path names the example.
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
    return dataset


def image_name(image, index: int, dataset_source: str) -> str | int:
    """The image's path relative to the dataset folder when it has one there, its stored path, or its index."""
    path = image.get("path") if isinstance(image, dict) else image if isinstance(image, str) else None
    if not path:
        return index
    folder = Path(dataset_source).resolve()
    try:
        return Path(path).resolve().relative_to(folder).as_posix()
    except ValueError:
        return path


def image_source(image):
    """What the image processor reads: the stored bytes or path of an undecoded image, else the image itself."""
    return (image["bytes"] or image["path"]) if isinstance(image, dict) else image


def by_size(dataset: datasets.Dataset) -> list[int]:
    """Example indices ordered by image width, then height (read from the file headers). A batch of similar images
    mostly shares one reading bucket, so it pads no further than each image alone, and its formulas end at similar
    lengths."""

    def size(image) -> tuple[int, int]:
        source = image_source(image)
        try:
            with PILImage.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
                return opened.width, opened.height
        except (OSError, TypeError, ValueError, AttributeError):  # unreadable: `predict` reports it
            return 0, 0

    return sorted(range(len(dataset)), key=lambda index: size(dataset[index]["image"]))


def group_values(dataset: datasets.Dataset, field: str) -> list[str]:
    """Each example's value of `field`: a column, or `COLUMN.KEY`, a key of a column holding JSON objects."""
    column, _, key = field.partition(".")
    if column not in dataset.column_names:
        raise UsageError(f"--group-by {field}: the dataset has no column {column!r}; it has {dataset.column_names}")
    values = dataset[column]
    if not key:
        return [str(value) for value in values]
    keyed = []
    for value in values:
        try:
            fields = json.loads(value)
        except (TypeError, json.JSONDecodeError):
            raise UsageError(f"--group-by {field}: column {column!r} holds {value!r}, not a JSON object") from None
        if not isinstance(fields, dict) or key not in fields:
            raise UsageError(f"--group-by {field}: {value!r} in column {column!r} has no key {key!r}")
        keyed.append(str(fields[key]))
    return keyed


def natural(value: str) -> tuple:
    """Sort key: numbers by value (90 before 280), then text."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def score(records: list[dict]) -> dict[str, float]:
    """The formula metrics, the share of outputs that hit the length limit (a prediction without an end token), and
    where the records carry them the compile and image results (over the references that render)."""
    metrics = compute_formula_metrics([r["prediction"] for r in records], [r["reference"] for r in records])
    metrics["truncated_fraction"] = sum(r["truncated"] for r in records) / len(records)
    if "enlarged" in records[0]:
        metrics["enlarged_fraction"] = sum(r["enlarged"] for r in records) / len(records)
    if "compiles" in records[0]:
        metrics["compile_fraction"] = sum(r["compiles"] for r in records) / len(records)
    compared = [r["image_match"] for r in records if "image_match" in r]
    if compared:
        metrics["image_exact_match"] = sum(compared) / len(compared)
        metrics["image_num_samples"] = len(compared)
    return metrics


def score_groups(records: list[dict], field: str) -> dict[str, dict]:
    """`score` for each value of `field` (the records carry it), with the number of examples."""
    groups = defaultdict(list)
    for record in records:
        groups[record[field]].append(record)
    return {
        value: {**score(groups[value]), "num_samples": len(groups[value])} for value in sorted(groups, key=natural)
    }


def read_predictions(path: Path, fields: list[str]) -> tuple[list[dict], dict]:
    """A run's saved records (`predictions.jsonl`), checked for `fields`, and what the `metrics.json` beside it says
    (without its groups; its scores are computed again and replace the saved ones)."""
    try:
        records = read_readings(path, ["truncated", *fields])
    except ValueError as error:
        raise UsageError(f"--rescore {error}") from None
    run = {}
    if (path.parent / "metrics.json").is_file():
        run = json.loads((path.parent / "metrics.json").read_text(encoding="utf-8"))
        run.pop("by", None)
    return records, run


def predict(model, processor, dataset: datasets.Dataset, args: argparse.Namespace) -> dict[int, dict]:
    """Read every image in batches of similar sizes; unreadable ones are reported and skipped.

    Returns:
        `{"image", "reference", "prediction", "truncated", "enlarged"}` for each readable example, by its index in
        the dataset.
    """
    records = {}
    order = by_size(dataset)
    with tqdm(total=len(dataset), desc="evaluating", unit="formula") as progress:
        for start in range(0, len(order), args.batch_size):
            indices = order[start : start + args.batch_size]
            batch = dataset[indices]
            images, kept = [], []
            for index, image, formula in zip(indices, batch["image"], batch["formula"], strict=True):
                name = image_name(image, index, args.dataset)
                try:
                    images.append(processor.image_processor.prepare(image_source(image)))
                except (InvalidImageError, FileNotFoundError) as error:
                    logger.warning("skipping example %s: %s", name, error)
                    continue
                kept.append((index, {"image": name, "reference": formula}))
            if images:
                readings = read_formulas(model, processor, images, num_beams=args.num_beams)
                for (index, record), reading in zip(kept, readings, strict=True):
                    records[index] = {
                        **record,
                        "prediction": reading.latex,
                        "truncated": reading.truncated,
                        "enlarged": reading.enlarged,
                    }
            progress.update(len(indices))
    return records


def check_renders(records: list[dict], compare: bool) -> None:
    """Render each record's prediction with pdflatex in the Deng et al. look and add `compiles`; with `compare`, also
    render its reference and add `image_match` where that renders: whether the two renders have the same size and
    pixels (pdflatex is deterministic)."""
    from data.render import render  # here: only these options need TeX and PyMuPDF (requirements-data.txt)

    def images(field: str) -> list[PILImage.Image | None]:
        return [result.image for result in render([r[field] for r in records], style="deng")]

    predictions = images("prediction")
    references = images("reference") if compare else [None] * len(records)
    for record, prediction, reference in zip(records, predictions, references, strict=True):
        record["compiles"] = prediction is not None
        if reference is not None:
            record["image_match"] = (
                prediction is not None
                and prediction.size == reference.size
                and prediction.tobytes() == reference.tobytes()
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="saved model folder (train.py's output) or Hub id")
    parser.add_argument("--dataset", help="Hub id, parquet DatasetDict folder or image folder")
    parser.add_argument(
        "--rescore", type=Path, metavar="PREDICTIONS", help="score a run's predictions.jsonl again (no model, no data)"
    )
    parser.add_argument("--split", default="test", help="split to score (an image folder's only split by any name)")
    parser.add_argument("--output", type=Path, required=True, help="folder for metrics.json and predictions.jsonl")
    parser.add_argument("--num-beams", type=int, help="beams for generate (default: the model's generation config)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--min-glyph-height",
        type=int,
        help="also read images with smaller glyphs enlarged, keeping the more confident reading; 0: never "
        "(default: the model's processor)",
    )
    parser.add_argument(
        "--denoise-strength",
        type=float,
        help="filter images with a noisy background before reading, at this strength; 0: never "
        "(default: the model's processor)",
    )
    parser.add_argument("--max-samples", type=int, help="score only the first N examples")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--formula-column", default="formula")
    parser.add_argument("--min-bleu", type=float, help="exit with status 1 when BLEU (in [0, 1]) is below this")
    parser.add_argument(
        "--check-compiles", action="store_true", help="render every prediction with pdflatex: compile_fraction"
    )
    parser.add_argument(
        "--image-match",
        action="store_true",
        help="also render every reference: image_exact_match, the share of predictions rendering to the same pixels",
    )
    parser.add_argument(
        "--balanced-groups",
        action="store_true",
        help="keep every output's braces, \\left/\\right and \\begin/\\end balanced (the model's group_token_ids)",
    )
    parser.add_argument(
        "--max-spacing-run",
        type=int,
        metavar="N",
        help="at most N hand spacing commands of any kinds in a row (overrides the model's max_spacing_run)",
    )
    parser.add_argument(
        "--group-by",
        action="append",
        default=[],
        metavar="FIELD",
        help="also score each value of a column, or of COLUMN.KEY in a column of JSON objects (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.rescore is None and (args.model is None or args.dataset is None):
        raise UsageError("give --model and --dataset, or --rescore PREDICTIONS")
    reading_options = args.model or args.dataset or args.balanced_groups or args.max_spacing_run is not None
    if args.rescore is not None and reading_options:
        raise UsageError(
            "--rescore scores saved predictions: it takes no --model, --dataset, --balanced-groups, --max-spacing-run"
        )
    for name in ("num_beams", "batch_size", "max_samples", "max_spacing_run"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in IMAGE_PROCESSOR_OPTIONS:
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 0, got {getattr(args, name)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was given but no CUDA device is available")
    if (args.check_compiles or args.image_match) and shutil.which("pdflatex") is None:
        flag = "--image-match" if args.image_match else "--check-compiles"
        raise UsageError(f"{flag} renders formulas with pdflatex, which is not on PATH (install TeX: see README)")
    return args


def read_dataset(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Load the model and the data, read every image; return the records and the run's details.
    Raises `UsageError` for a bad model, dataset or `--group-by`, before any reading."""
    check_source(args.model, "model", "config.json")
    check_source(args.dataset, "dataset")
    dataset = load_examples(args)
    groups = {field: group_values(dataset, field) for field in args.group_by}
    model, processor = load_model(args.model, args.device)
    args.num_beams = args.num_beams or model.generation_config.num_beams or 1
    if args.balanced_groups:
        model.config.group_token_ids = group_token_ids(processor.tokenizer)
    if args.max_spacing_run is not None:
        model.config.spacing_token_ids = spacing_token_ids(processor.tokenizer)
        model.config.max_spacing_run = args.max_spacing_run
    for name in IMAGE_PROCESSOR_OPTIONS:
        if getattr(args, name) is not None:
            setattr(processor.image_processor, name, getattr(args, name))

    # Timed: preprocessing + generation + decoding (not loading).
    started = time.perf_counter()
    readings = predict(model, processor, dataset, args)
    seconds = time.perf_counter() - started
    for field, values in groups.items():
        for index, record in readings.items():
            record[field] = values[index]
    records = [readings[index] for index in sorted(readings)]
    run = {
        "num_samples": len(records),
        "num_skipped": len(dataset) - len(records),
        "split": args.split,
        "dataset": args.dataset,
        "model": args.model,
        "num_beams": args.num_beams,
        "balanced_groups": bool(getattr(model.config, "group_token_ids", None)),
        "max_token_repeats": getattr(model.config, "max_token_repeats", None),
        "max_spacing_run": getattr(model.config, "max_spacing_run", None),
        **{name: getattr(processor.image_processor, name) for name in IMAGE_PROCESSOR_OPTIONS},
        "seconds": round(seconds, 3),
        "formulas_per_second": len(records) / seconds if seconds > 0 else 0.0,
    }
    return records, run


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # 1. Arguments, then the records: read from the images by the model, or saved by an earlier run (--rescore).
    # Any problem before the reading is one line and exit status 2.
    try:
        args = parse_args(argv)
        if args.rescore is not None:
            records, run = read_predictions(args.rescore, args.group_by)
        else:
            records, run = read_dataset(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not records:
        print(f"error: no readable image among the {run['num_skipped']} examples of {args.dataset}", file=sys.stderr)
        return 1

    # 2. Score and write.
    if args.check_compiles or args.image_match:
        check_renders(records, compare=args.image_match)
    metrics = score(records)  # then the run's details; a rescored run's saved scores give way to these
    metrics.update({key: value for key, value in run.items() if key not in metrics}, num_samples=len(records))
    if args.rescore is not None:
        metrics["rescored_from"] = str(args.rescore)
    by = {field: score_groups(records, field) for field in args.group_by}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "metrics.json").write_text(
        json.dumps({**metrics, "by": by} if by else metrics, indent=2) + "\n", encoding="utf-8"
    )
    with open(args.output / "predictions.jsonl", "w", encoding="utf-8") as file:
        file.writelines(json.dumps(record) + "\n" for record in records)

    width = max(len(key) for key in metrics)
    for key, value in metrics.items():
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    columns = {"bleu": "bleu", "tes": "token_edit_similarity", "cer": "cer", "exact": "exact_match"}
    if "image_exact_match" in metrics:
        columns["image"] = "image_exact_match"
    for field, table in by.items():
        print(f"\n{field:<20} {'n':>6}" + "".join(f" {name:>7}" for name in columns))
        for value, row in table.items():
            cells = "".join(f" {row[key]:>7.4f}" if key in row else f" {'-':>7}" for key in columns.values())
            print(f"{value:<20} {row['num_samples']:>6}{cells}")
    if args.min_bleu is not None and metrics["bleu"] < args.min_bleu:
        print(f"error: BLEU {metrics['bleu']:.4f} is below --min-bleu {args.min_bleu}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
