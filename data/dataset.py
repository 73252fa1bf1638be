"""Formula datasets through `datasets`: a Hub id, a parquet DatasetDict folder or an image folder, with the
per-example processing (augment for training, image processor, tokenizer) applied on the fly."""

import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, IterableDataset, load_dataset

from .normalize import canonical

logger = logging.getLogger(__name__)


def load_formula_dataset(
    source: str | Path,
    split: str | None = None,
    image_column: str = "image",
    formula_column: str = "formula",
) -> Dataset | DatasetDict:
    """Load formula images and their LaTeX, with the columns renamed to `image` and `formula`.

    Args:
        source: a Hub dataset id (e.g. `yuntian-deng/im2latex-100k`), a folder that `datasets.load_dataset` reads
            (parquet splits as `prepare` writes them), or an image folder with a `metadata.csv` of
            `file_name,formula`.
        split: one split, or None for all. An image folder has a single split, which any name selects.
        image_column, formula_column: the source's column names.

    Returns:
        A `Dataset` (one split) or a `DatasetDict`, with at least the columns `image` and `formula`.
    """
    path = Path(source)
    if path.exists() and not path.is_dir():
        raise ValueError(f"dataset {source} is a file; give a folder or a Hub dataset id")
    if path.is_dir() and (path / "metadata.csv").is_file():
        dataset = load_dataset("imagefolder", data_dir=str(path))
        if split is not None and split not in dataset and len(dataset) == 1:
            logger.info("image folder %s has one split; using it as %r", source, split)
            split = next(iter(dataset))
    else:
        dataset = load_dataset(str(source))
    if split is not None:
        if split not in dataset:
            raise ValueError(f"dataset {source} has no split {split!r}; it has {sorted(dataset)}")
        dataset = dataset[split]
    columns = dataset.column_names if isinstance(dataset, Dataset) else next(iter(dataset.values())).column_names
    for wanted, name in (("image", image_column), ("formula", formula_column)):
        if name not in columns:
            raise ValueError(f"dataset {source} has no {wanted} column {name!r}; its columns are {columns}")
    renames = {old: new for old, new in ((image_column, "image"), (formula_column, "formula")) if old != new}
    return dataset.rename_columns(renames) if renames else dataset


def with_canonical_formulas(dataset: Dataset) -> Dataset:
    """`dataset` with its `formula` column in the current canonical form (`data.normalize.canonical`), computed
    once: a dataset built by an older normalisation, or a raw Hub dataset, then trains and scores the current form.
    The images are not read or copied."""
    formulas = [canonical(formula) for formula in dataset["formula"]]
    return dataset.remove_columns("formula").add_column("formula", formulas)


class ProcessFormulas:
    """A `datasets` transform: images -> unpadded `pixel_values` (image processor), formulas -> `labels` ids.

    Args:
        processor: an `Im2LatexProcessor` (image processor + tokenizer).
        max_label_length: labels are cut to this many ids (the decoder's positions).
        augment: a batch transform applied to the images first (training only), e.g.
            `data.augment.make_train_transform()`. Augmented images are prepared without the image processor's noise
            filter (`denoise_strength`): training is where the model learns to read noise, and filtering would about
            halve the input speed (`python -m bench.data_pipeline [--denoise]`: 480-630 against 250 images/s per
            core, below the 400 a GPU needs).
    """

    def __init__(self, processor: Any, max_label_length: int, augment: Callable[[dict], dict] | None = None):
        self.processor = processor
        self.max_label_length = max_label_length
        self.augment = augment

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self.augment is not None:
            batch = self.augment(batch)
        prepare = self.processor.image_processor.prepare
        denoise = self.augment is None
        labels = self.processor.tokenizer(batch["formula"]).input_ids
        return {
            "pixel_values": [prepare(image, denoise=denoise) for image in batch["image"]],
            "labels": [ids[: self.max_label_length] for ids in labels],
        }


def size_sorted_runs(shapes: list[tuple[int, ...]], batch_size: int) -> list[list[int]]:
    """Indices of prepared images in runs of `batch_size`, sorted by (height band of 16 pixels, width): each run
    pads little. The last run may be short."""
    order = sorted(range(len(shapes)), key=lambda i: (shapes[i][0] // 16, shapes[i][1]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class SizeSortedPools:
    """A batched `datasets.IterableDataset.map` function: a pool of raw examples -> training examples ordered so that
    each run of `batch_size` holds images of similar padded sizes.

    Training batches are padded to their largest image, and augmentation's random rescaling puts a near-maximum image
    in almost every random batch: three quarters of a random batch's pixels are padding
    (`python -m bench.batch_padding`). Here a pool (the map's batch, a multiple of `batch_size`) is processed by
    `process`, cut into runs of similar sizes (`size_sorted_runs`) and the full runs shuffled;
    a DataLoader with that batch size then collates each run as one batch. A short run, only at the end of the data,
    comes last.

    Args:
        process: the per-example processing (`ProcessFormulas`, with augmentation for training).
        batch_size: the DataLoader's batch size (per device).
        seed: seeds the order of the runs.
    """

    def __init__(self, process: Callable[[dict], dict], batch_size: int, seed: int = 0):
        self.process = process
        self.batch_size = batch_size
        self.rng = random.Random(seed)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        processed = self.process(batch)
        runs = size_sorted_runs([values.shape for values in processed["pixel_values"]], self.batch_size)
        short = [runs.pop()] if runs and len(runs[-1]) < self.batch_size else []
        self.rng.shuffle(runs)
        order = [index for run in runs + short for index in run]
        return {key: [values[index] for index in order] for key, values in processed.items()}


def size_sorted_stream(
    dataset: Dataset, process: Callable[[dict], dict], batch_size: int, pool_batches: int, seed: int = 0
) -> IterableDataset:
    """`dataset` as one endless shuffled stream of processed examples in size-sorted runs of `batch_size`
    (`SizeSortedPools` over pools of `pool_batches` batches), for a Trainer with `max_steps`.

    Endless, not one stream per epoch: each new epoch restarts every DataLoader worker, and each worker processes a
    whole pool before its first batch (on an H100 at batch 256, pools of 16 batches and 14 workers, about 10 s of an
    idle GPU per epoch). The shuffle buffer follows the repeat, so it carries on across passes and each pass is
    batched differently.
    """
    pool = batch_size * pool_batches
    return (
        dataset.to_iterable_dataset(num_shards=min(64, len(dataset)))
        .repeat(None)
        .shuffle(seed=seed, buffer_size=pool)
        .map(
            SizeSortedPools(process, batch_size, seed=seed),
            batched=True,
            batch_size=pool,
            remove_columns=dataset.column_names,
        )
    )
