"""Pack a prepared dataset into a size budget, for a GPU host that receives a limited upload.

    python -m data.pack --dataset datasets/im2latex --output .device/data --max-mib 46 [--eval-samples 500]

Train: whole parquet shards of the train split, copied as they are, as many as fit (`data.prepare` shuffles the
formulas before it shards them, so any shards are a sample of the whole mix). Validation: `--eval-samples` rows of
the validation split drawn at random (seeded), rewritten as one shard. Nothing is decoded or re-encoded, so the
packed rows are byte for byte the prepared ones. `pack.json` lists the shards and counts rows and bytes per split;
`datasets.load_dataset(OUTPUT)` and `train.py --dataset OUTPUT` read the folder.
"""

import argparse
import json
import logging
import random
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from .prepare import write_table

logger = logging.getLogger(__name__)

MIB = 2**20


def shards(dataset: Path, split: str) -> list[Path]:
    """The parquet shards of `split` in a folder that `data.prepare` wrote (`DATASET/data/SPLIT-*.parquet`)."""
    found = sorted((dataset / "data").glob(f"{split}-*.parquet"))
    if not found:
        raise FileNotFoundError(f"{dataset / 'data'} has no {split}-*.parquet shards: build it with data.prepare")
    return found


def pack(dataset: Path, output: Path, max_bytes: int, eval_samples: int, seed: int = 0) -> dict:
    """Write the packed folder and return its summary (also saved as `OUTPUT/pack.json`).

    Args:
        dataset: a folder written by `data.prepare`.
        output: the packed folder; it must not exist yet (nothing is overwritten).
        max_bytes: the most the packed shards may take together.
        eval_samples: validation rows to keep (all of them if the split has fewer).
        seed: chooses the validation rows.

    Raises:
        FileNotFoundError: `dataset` lacks the train or validation shards.
        FileExistsError: `output` exists.
        ValueError: the validation rows and one train shard do not fit in `max_bytes`.
    """
    train_shards, validation_shards = shards(dataset, "train"), shards(dataset, "validation")
    if output.exists():
        raise FileExistsError(f"{output} exists: pack into a new folder")
    (output / "data").mkdir(parents=True)

    validation = pq.ParquetDataset(validation_shards).read()  # the schema keeps the features (image decoding)
    keep = sorted(random.Random(seed).sample(range(validation.num_rows), min(eval_samples, validation.num_rows)))
    validation_path = output / "data" / "validation-00000-of-00001.parquet"
    write_table(validation.take(keep), validation_path)
    validation_bytes = used = validation_path.stat().st_size

    sizes = {path: path.stat().st_size for path in train_shards}
    chosen = []
    for path, size in sizes.items():
        if used + size <= max_bytes:
            shutil.copyfile(path, output / "data" / path.name)
            chosen.append(path)
            used += size
    if not chosen:
        shutil.rmtree(output)
        raise ValueError(
            f"{max_bytes / MIB:.1f} MiB holds no train shard of {dataset} beside {len(keep)} validation rows "
            f"({used / MIB:.1f} MiB; the smallest shard takes {min(sizes.values()) / MIB:.1f} MiB)"
        )

    train_rows = sum(pq.ParquetFile(path).metadata.num_rows for path in chosen)
    all_rows = sum(pq.ParquetFile(path).metadata.num_rows for path in train_shards)
    summary = {
        "dataset": str(dataset),
        "train": {
            "rows": train_rows,
            "of_rows": all_rows,
            "bytes": used - validation_bytes,
            "shards": [path.name for path in chosen],
        },
        "validation": {"rows": len(keep), "of_rows": validation.num_rows, "bytes": validation_bytes},
        "bytes": used,
    }
    (output / "pack.json").write_text(json.dumps(summary, indent=2))
    logger.info(
        "packed %d of %d train rows (%d of %d shards) and %d validation rows in %.1f MiB",
        train_rows,
        all_rows,
        len(chosen),
        len(train_shards),
        len(keep),
        used / MIB,
    )
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, help="a folder written by data.prepare")
    parser.add_argument("--output", type=Path, required=True, help="the packed folder (must not exist)")
    parser.add_argument("--max-mib", type=float, required=True, help="the most the packed shards may take")
    parser.add_argument("--eval-samples", type=int, default=500, help="validation rows to keep")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.max_mib <= 0 or args.eval_samples <= 0:
        parser.error(f"--max-mib ({args.max_mib}) and --eval-samples ({args.eval_samples}) must be positive")
    try:
        pack(args.dataset, args.output, int(args.max_mib * MIB), args.eval_samples, args.seed)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
