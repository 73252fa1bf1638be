"""Reading speed on the CPU: one image at a time (latency p50/p95) and batched (formulas/s), greedy and beam.

    python -m bench.predict_latency --dataset ../build/eval-data/data --count 100 [--model models/im2latex-base]

The images are drawn at random from the dataset (im2latex-100k test formulas average about 58 tokens; the sample's
mean is printed). Times include preparing the image (decoding the PNG, cropping, scaling). Two paddings are
measured: every image padded up to its `--bucket` (what `read_formulas`, so predict.py, evaluate.py and the server,
do; batches hold one bucket) and tight (an image alone padded to the model's stride; a batch, sorted by size, pads
to its largest image). Padding changes what the encoder sees, so each batched run says how many readings equal the
same padding's one-at-a-time ones, and, where the dataset has formulas, BLEU and token edit similarity. Stop
other work on the machine first: the numbers are wall-clock.
"""

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from transformers import AutoProcessor, PreTrainedModel, ProcessorMixin

from bench.formula_images import sample_images
from data.metrics import compute_formula_metrics
from modeling import Im2LatexForConditionalGeneration
from modeling.image_processing_im2latex import READING_BUCKET
from modeling.inference import Reading, read_formulas

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "im2latex-base"


def percentiles(seconds: list[float]) -> str:
    p50, p95 = np.percentile(seconds, [50, 95]) * 1e3
    return f"p50 {p50:6.0f} ms  p95 {p95:6.0f} ms  mean {1e3 * np.mean(seconds):6.0f} ms"


def read_batched(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    prepared: list[np.ndarray],
    batch_size: int,
    bucket: tuple[int, int] | None,
    num_beams: int = 1,
) -> list[Reading]:
    """Readings in batches: sorted by size, or (with a bucket) only of images of one bucket."""
    groups = defaultdict(list)
    for index in sorted(range(len(prepared)), key=lambda i: prepared[i].shape):
        key = processor.image_processor.padded_shape([prepared[index].shape], bucket) if bucket else None
        groups[key].append(index)
    readings = [None] * len(prepared)
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            batch = read_formulas(model, processor, [prepared[i] for i in chunk], num_beams=num_beams, bucket=bucket)
            for index, reading in zip(chunk, batch, strict=True):
                readings[index] = reading
    return readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="parquet dataset folder or image folder")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--count", type=int, default=100, help="images to read")
    parser.add_argument("--num-beams", type=int, default=4, help="beams of the beam-search run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--bucket", type=lambda text: tuple(int(side) for side in text.split("x")), default=READING_BUCKET, help="HxW"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = Im2LatexForConditionalGeneration.from_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    samples = sample_images(args.dataset, args.count, args.seed)
    images = [data for data, _ in samples]
    formulas = [formula for _, formula in samples]
    if not all(formulas):
        formulas = None
    print(f"{len(images)} images from {args.dataset}, torch threads {torch.get_num_threads()}")
    if formulas:
        lengths = [len(formula.split()) for formula in formulas]
        print(f"reference formulas: mean {np.mean(lengths):.1f} tokens, median {np.median(lengths):.0f}")
    read_formulas(model, processor, [processor.image_processor.prepare(images[0])], num_beams=1)  # warm-up

    def quality(readings: list[Reading]) -> str:
        """BLEU and token edit similarity against the references, where the dataset has them."""
        if formulas is None:
            return ""
        scores = compute_formula_metrics([r.latex for r in readings], formulas)
        return f"; BLEU {scores['bleu']:.3f}, token edit similarity {scores['token_edit_similarity']:.3f}"

    prepare = processor.image_processor.prepare
    paddings = {f"bucket {args.bucket[0]}x{args.bucket[1]}": args.bucket, "tight (to the stride)": None}
    for way, bucket in paddings.items():
        print(f"-- {way}")
        single = {}
        for beams in (1, args.num_beams):
            seconds, readings = [], []
            for data in images:
                began = time.perf_counter()
                (reading,) = read_formulas(model, processor, [prepare(data)], num_beams=beams, bucket=bucket)
                seconds.append(time.perf_counter() - began)
                readings.append(reading)
            single[beams] = readings
            tokens = np.mean([len(processor.tokenizer(r.latex).input_ids) for r in readings])
            name = "greedy" if beams == 1 else f"beam {beams}"
            print(f"one image, {name:7s} {percentiles(seconds)}  ({tokens:.0f} tokens out){quality(readings)}")
        for beams in (1, args.num_beams):
            began = time.perf_counter()
            prepared = [prepare(data) for data in images]
            batched = read_batched(model, processor, prepared, args.batch_size, bucket, beams)
            seconds = time.perf_counter() - began
            same = sum(a.latex == b.latex for a, b in zip(batched, single[beams], strict=True))
            name = "greedy" if beams == 1 else f"beam {beams}"
            print(
                f"batched {name}, batch {args.batch_size}: {len(images) / seconds:.1f} formulas/s; "
                f"{same}/{len(images)} readings identical to one-at-a-time{quality(batched)}"
            )


if __name__ == "__main__":
    main()
