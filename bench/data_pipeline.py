"""Training-input speed per core: decode -> augment -> image processor -> collate, on stored train rows.

    python -m bench.data_pipeline --dataset datasets/im2latex [--rows 2000] [--batch-size 64] [--denoise] \
        [--augment-options '{"p_blur": 0.5, "blur_sigma_range": [0.3, 1.6]}']

Runs in one process with one OpenCV and one torch thread, so the numbers are per core. A 6,000 images/s GPU
fed from 16 cores needs about 400 images/s per core end to end. Also prints the stored bytes per train image and
what 150 K of them weigh.
"""

import argparse
import io
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from data.augment import AugmentConfig, augment
from data.collator import FormulaCollator
from modeling.image_processing_im2latex import Im2LatexImageProcessor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="a folder that data.prepare wrote")
    parser.add_argument("--rows", type=int, default=2000, help="train rows to time")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--denoise",
        action="store_true",
        help="filter noisy images as reading does (training does not: see data.dataset.ProcessFormulas)",
    )
    parser.add_argument(
        "--augment-options",
        help="AugmentConfig fields to change, as a JSON object (what train.py --augment_options takes)",
    )
    args = parser.parse_args()
    try:
        config = AugmentConfig.from_options(args.augment_options)
    except ValueError as error:
        parser.error(str(error))
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    shards = sorted((args.dataset / "data").glob("train-*.parquet"))
    if not shards:
        raise FileNotFoundError(f"no train-*.parquet under {args.dataset / 'data'}")
    total_bytes = sum(path.stat().st_size for path in shards)
    total_rows = sum(pq.ParquetFile(path).metadata.num_rows for path in shards)
    per_image = total_bytes / total_rows
    print(
        f"stored: {total_rows} train rows, {per_image:.0f} bytes/image all-in, "
        f"{per_image * 150_000 / 2**20:.1f} MiB per 150 K"
    )
    stored = [
        row["bytes"] for path in shards for row in pq.read_table(path, columns=["image"]).column("image").to_pylist()
    ]
    stored = stored[: args.rows]
    n = len(stored)

    def decode(data: bytes) -> Image.Image:
        # What datasets.Image.decode_example does for a row with bytes.
        image = Image.open(io.BytesIO(data))
        image.load()
        return image

    rng = np.random.default_rng(args.seed)
    processor = Im2LatexImageProcessor()
    collator = FormulaCollator(processor)
    stages = {}
    began = time.perf_counter()
    images = [decode(data) for data in stored]
    stages["decode"] = time.perf_counter() - began
    began = time.perf_counter()
    augmented = [augment(image, config, rng) for image in images]
    stages["augment"] = time.perf_counter() - began
    began = time.perf_counter()
    prepared = [processor.prepare(image, denoise=args.denoise) for image in augmented]
    stages["prepare"] = time.perf_counter() - began
    began = time.perf_counter()
    for start in range(0, n, args.batch_size):
        collator([{"pixel_values": p, "labels": [1, 2, 3]} for p in prepared[start : start + args.batch_size]])
    stages["collate"] = time.perf_counter() - began

    print(f"{n} images, batch {args.batch_size}, one core")
    for name, seconds in stages.items():
        print(f"  {name:8s} {n / seconds:8.0f} images/s  ({1e3 * seconds / n:.2f} ms/image)")
    total = sum(stages.values())
    print(f"  {'total':8s} {n / total:8.0f} images/s  ({1e3 * total / n:.2f} ms/image); the target is 400/s per core")


if __name__ == "__main__":
    main()
