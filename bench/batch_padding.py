"""How much of a training batch is padding: random batches against batches drawn from size-sorted pools.

    python -m bench.batch_padding --dataset datasets/im2latex [--model models/im2latex-base] [--rows 4096]

Processes train rows as training does (augmentation, then the model's image processor), forms batches of each
size in `--batch-sizes` either at random or from pools of `--pool-batches` batches sorted by padded height, then
width, and prints the padded pixels per image, the share of them that is image, and the padded label length.
The encoder's cost follows the padded pixels: a training step on 16 images padded to 128x640 takes about three times
as long as on 64x320 (2 CPU cores), and augmentation's random rescaling puts a near-maximum image in almost every
random batch.
"""

import argparse
import random

import numpy as np

from data.augment import make_train_transform
from data.dataset import ProcessFormulas, load_formula_dataset, size_sorted_runs
from modeling import Im2LatexProcessor


def sorted_pools(shapes: list[tuple[int, int]], batch_size: int, pool_batches: int) -> list[int]:
    """Example order of `--pool_batches` training: each pool cut into runs by `data.dataset.size_sorted_runs`."""
    pool = batch_size * pool_batches
    return [
        index
        for start in range(0, len(shapes), pool)
        for run in size_sorted_runs(shapes[start : start + pool], batch_size)
        for index in (start + i for i in run)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a folder that data.prepare wrote, or a Hub id")
    parser.add_argument("--model", default="models/im2latex-base", help="the processor's source")
    parser.add_argument("--rows", type=int, default=4096, help="train rows to process")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--pool-batches", type=int, default=16, help="batches per sorted pool")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    processor = Im2LatexProcessor.from_pretrained(args.model)
    dataset = load_formula_dataset(args.dataset, "train")
    dataset = dataset.shuffle(seed=args.seed).select(range(min(args.rows, len(dataset))))
    dataset.set_transform(
        ProcessFormulas(processor, max_label_length=10_000, augment=make_train_transform(seed=args.seed))
    )
    examples = dataset[:]  # processed: pixel_values (H, W) arrays and label ids
    shapes = [values.shape for values in examples["pixel_values"]]
    lengths = [len(ids) for ids in examples["labels"]]
    real = np.mean([height * width for height, width in shapes])
    print(f"{len(shapes)} train rows; image {real:.0f} pixels and label {np.mean(lengths):.0f} ids per example")
    print(f"{'batch':>5} {'order':<16} {'padded px/image':>16} {'image share':>12} {'padded label':>13}")
    for batch_size in args.batch_sizes:
        shuffled = list(range(len(shapes)))
        random.Random(args.seed).shuffle(shuffled)
        orders = {
            "random": shuffled,
            f"pools of {args.pool_batches}": sorted_pools(shapes, batch_size, args.pool_batches),
        }
        for name, order in orders.items():
            padded, label_width = [], []
            for start in range(0, len(order) - batch_size + 1, batch_size):
                batch = order[start : start + batch_size]
                height, width = processor.image_processor.padded_shape([shapes[i] for i in batch])
                padded.append(height * width)
                label_width.append(max(lengths[i] for i in batch))
            if not padded:
                print(f"{batch_size:>5} {name:<16} (fewer than {batch_size} rows)")
                continue
            print(
                f"{batch_size:>5} {name:<16} {np.mean(padded):>16.0f} {real / np.mean(padded):>12.2f}"
                f" {np.mean(label_width):>13.0f}"
            )


if __name__ == "__main__":
    main()
