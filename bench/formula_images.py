"""Sample formula images for the reading benchmarks: from a parquet dataset folder (with `image` and `formula`
columns, as `data.prepare` writes) or from a folder of image files."""

import random
from pathlib import Path

from predict import IMAGE_SUFFIXES


def sample_images(folder: Path, count: int, seed: int = 0, split: str = "test") -> list[tuple[bytes, str | None]]:
    """`count` images drawn at random (seeded), as (encoded image bytes, reference formula or None).

    Args:
        folder: a folder holding *.parquet files (searched recursively), or image files.
        count: how many to draw (all of them when there are fewer).
        seed: the draw's seed.
        split: parquet files named `{split}-*.parquet` are read (all of them when none is).
    """
    shards = sorted(folder.rglob("*.parquet"))
    shards = [path for path in shards if path.name.startswith(f"{split}-")] or shards
    if shards:
        import datasets

        table = datasets.load_dataset("parquet", data_files=[str(p) for p in shards], split="train")
        table = table.cast_column("image", datasets.Image(decode=False))
        chosen = random.Random(seed).sample(range(len(table)), min(count, len(table)))
        rows = table.select(chosen)
        return [(row["image"]["bytes"], row.get("formula")) for row in rows]
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no *.parquet and no image files in {folder}")
    chosen = random.Random(seed).sample(files, min(count, len(files)))
    return [(path.read_bytes(), None) for path in chosen]
