"""Read the LaTeX of formula images.

    python predict.py examples/quadratic.png            # one LaTeX line per image
    python predict.py scans/ more.png --format json     # folders are read for images; one JSON object per line
    cat formula.png | python predict.py -               # image bytes on stdin

The default model is the one shipped in this repository (models/im2latex-base); `--model` takes any saved folder
or Hub id. Exit status 1 when any input could not be read (each is reported on stderr, the others still run).
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm
from transformers import AutoProcessor

from modeling import Im2LatexForConditionalGeneration
from modeling.compact import compact_or_tokens
from modeling.inference import read_formulas

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "im2latex-base"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"}


def expand_inputs(inputs: list[str]) -> list[str]:
    """Paths as given, folders replaced by the images in them (sorted); `-` stays (stdin)."""
    expanded = []
    for name in inputs:
        path = Path(name)
        if name != "-" and path.is_dir():
            expanded += sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            expanded.append(name)
    return expanded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files, folders of images, or - for image bytes on stdin")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="saved model folder or Hub id")
    parser.add_argument("--num-beams", type=int, default=None, help="beams (default: the model's generation config)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--style",
        choices=("tokens", "compact"),
        default="tokens",
        help="tokens: the model's form (\\frac { a } { b }); compact: as people write it (\\frac{a}{b}), same image "
        "(an unfinished reading with unbalanced braces stays in the token form)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.batch_size < 1 or (args.num_beams is not None and args.num_beams < 1):
        parser.error("--batch-size and --num-beams must be at least 1")
    looks_local = args.model.startswith((".", "/", "~")) or args.model.count("/") != 1
    if looks_local and not Path(args.model).expanduser().is_dir():
        print(f"error: model folder {args.model} does not exist", file=sys.stderr)
        return 2
    try:
        model = Im2LatexForConditionalGeneration.from_pretrained(args.model).to(args.device).eval()
        processor = AutoProcessor.from_pretrained(args.model)
    except OSError as error:  # a missing folder, an unknown Hub id, or no network for one
        print(f"error: cannot load the model {args.model}: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2

    # Read and prepare every image first: a bad one is reported and skipped, the others go on.
    names, prepared, failed = [], [], 0
    for name in expand_inputs(args.inputs):
        try:
            source = sys.stdin.buffer.read() if name == "-" else name
            prepared.append(processor.image_processor.prepare(source))
            names.append(name)
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1

    # Similar sizes batch together, so little padding is computed; results are printed in input order.
    order = sorted(range(len(prepared)), key=lambda i: prepared[i].shape)
    results = [None] * len(prepared)
    with tqdm(total=len(prepared), desc="predict", unit="image", file=sys.stderr, disable=len(prepared) < 2) as bar:
        for start in range(0, len(order), args.batch_size):
            chunk = order[start : start + args.batch_size]
            began = time.perf_counter()
            readings = read_formulas(model, processor, [prepared[i] for i in chunk], num_beams=args.num_beams)
            seconds = (time.perf_counter() - began) / len(chunk)
            for index, reading in zip(chunk, readings, strict=True):
                results[index] = (reading, seconds)
            bar.update(len(chunk))

    for name, (reading, seconds) in zip(names, results, strict=True):
        latex = compact_or_tokens(reading.latex) if args.style == "compact" else reading.latex
        if args.format == "json":
            record = {
                "image": name,
                "latex": latex,
                "score": round(reading.score, 4),
                "seconds": round(seconds, 4),
            }
            print(json.dumps(record), flush=True)
        else:
            print(latex, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
