"""data/dataset.py and data/collator.py: loading formula datasets from disk, per-example processing, collating."""

import csv
import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage
from PIL import ImageDraw

from data.collator import FormulaCollator
from data.dataset import (
    ProcessFormulas,
    SizeSortedPools,
    load_formula_dataset,
    size_sorted_stream,
    with_canonical_formulas,
)

TINY_DATASET = Path(__file__).parent / "fixtures" / "tiny_dataset"


def formula_image(text: str, size: tuple[int, int] = (160, 40)) -> PILImage.Image:
    image = PILImage.new("L", size, 255)
    ImageDraw.Draw(image).text((6, size[1] // 3), text, fill=0)
    return image


@pytest.fixture()
def parquet_dir(tmp_path) -> Path:
    """A DatasetDict folder as the Hub serves one (`data/<split>-*.parquet`), with the columns `img` and `latex`:
    a stand-in for `yuntian-deng/im2latex-100k` offline."""
    features = Features({"img": Image(), "latex": Value("string"), "extra": Value("int32")})
    splits = {"train": ["a + b", "x ^ { 2 }", "\\alpha"], "validation": ["\\frac { 1 } { 2 }", "y"]}
    (tmp_path / "data").mkdir()
    for name, formulas in splits.items():
        rows = {
            "img": [formula_image(f, (100 + 20 * i, 40)) for i, f in enumerate(formulas)],
            "latex": formulas,
            "extra": list(range(len(formulas))),
        }
        Dataset.from_dict(rows, features=features).to_parquet(
            str(tmp_path / "data" / f"{name}-00000-of-00001.parquet")
        )
    return tmp_path


# load_formula_dataset: image folder


def test_image_folder_any_split_name_selects_its_only_split():
    with open(TINY_DATASET / "metadata.csv", newline="", encoding="utf-8") as file:
        expected = [row["formula"] for row in csv.DictReader(file)]
    assert len(expected) == 12
    for split in ("train", "validation", "test"):
        ds = load_formula_dataset(TINY_DATASET, split=split)
        assert isinstance(ds, Dataset)
        assert ds.column_names == ["image", "formula"]
        assert ds["formula"] == expected
    image = ds[0]["image"]
    assert isinstance(image, PILImage.Image) and image.size[0] > 0


def test_image_folder_without_split_is_a_dataset_dict():
    ds = load_formula_dataset(str(TINY_DATASET))
    assert isinstance(ds, DatasetDict)
    assert list(ds) == ["train"] and len(ds["train"]) == 12


# load_formula_dataset: parquet DatasetDict with other column names


def test_parquet_folder_with_renamed_columns(parquet_dir):
    ds = load_formula_dataset(parquet_dir, split="validation", image_column="img", formula_column="latex")
    assert isinstance(ds, Dataset)
    assert set(ds.column_names) == {"image", "formula", "extra"}
    assert ds["formula"] == ["\\frac { 1 } { 2 }", "y"]
    assert isinstance(ds[0]["image"], PILImage.Image) and ds[1]["image"].size == (120, 40)

    both = load_formula_dataset(parquet_dir, image_column="img", formula_column="latex")
    assert isinstance(both, DatasetDict) and set(both) == {"train", "validation"}
    assert all(set(split.column_names) == {"image", "formula", "extra"} for split in both.values())
    assert both["train"]["formula"] == ["a + b", "x ^ { 2 }", "\\alpha"]


def test_parquet_folder_has_no_fallback_split(parquet_dir):
    """Only an image folder (one split) maps any name to its split; a real DatasetDict must have the split."""
    with pytest.raises(ValueError, match=r"no split 'test'.*\['train', 'validation'\]"):
        load_formula_dataset(parquet_dir, split="test", image_column="img", formula_column="latex")


# load_formula_dataset: errors


def test_missing_column_is_a_clear_error(parquet_dir):
    with pytest.raises(ValueError, match=r"no image column 'image'.*img"):
        load_formula_dataset(parquet_dir, split="train", formula_column="latex")
    with pytest.raises(ValueError, match=r"no formula column 'formula'.*latex"):
        load_formula_dataset(parquet_dir, split="train", image_column="img")
    with pytest.raises(ValueError, match=r"no formula column 'latex'"):
        load_formula_dataset(TINY_DATASET, split="train", formula_column="latex")


def test_file_instead_of_folder_is_a_clear_error():
    with pytest.raises(ValueError, match="metadata.csv is a file"):
        load_formula_dataset(TINY_DATASET / "metadata.csv", split="train")


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        load_formula_dataset(tmp_path / "no_such_folder", split="train")


# ProcessFormulas


@pytest.fixture()
def batch(fixture_formulas) -> dict[str, list]:
    formulas = fixture_formulas[:3]
    return {
        "image": [formula_image(f, (120 + 40 * i, 40 + 8 * i)) for i, f in enumerate(formulas)],
        "formula": formulas,
    }


def test_process_formulas_labels_end_with_eos(tiny_processor, batch):
    tokenizer = tiny_processor.tokenizer
    out = ProcessFormulas(tiny_processor, max_label_length=128)(batch)
    assert set(out) == {"pixel_values", "labels"}
    assert len(out["labels"]) == len(batch["formula"])
    for ids, formula in zip(out["labels"], batch["formula"], strict=True):
        assert ids[-1] == tokenizer.eos_token_id
        assert tokenizer.bos_token_id not in ids  # the decoder start token is prepended by the model, not here
        assert tokenizer.decode(ids, skip_special_tokens=True) == formula
    for pixels, image in zip(out["pixel_values"], batch["image"], strict=True):
        np.testing.assert_array_equal(pixels, tiny_processor.image_processor.prepare(image))
        assert pixels.ndim == 2  # unpadded: the collator pads


def test_augmented_images_are_prepared_unfiltered(tiny_processor, batch):
    """Reading filters noisy images; training, which augments them, keeps its noise for the model to learn."""
    rng = np.random.default_rng(0)
    noisy = []
    for image in batch["image"]:  # in wide margins, where the noise shows
        page = PILImage.new("L", (image.width + 200, image.height + 60), 255)
        page.paste(image.convert("L"), (100, 30))
        speckled = np.asarray(page) + rng.normal(0, 14, (page.height, page.width))
        noisy.append(PILImage.fromarray(np.clip(speckled, 0, 255).astype(np.uint8)))
    noisy_batch = {**batch, "image": noisy}
    prepare = tiny_processor.image_processor.prepare
    read = ProcessFormulas(tiny_processor, max_label_length=128)(noisy_batch)["pixel_values"]
    trained = ProcessFormulas(tiny_processor, max_label_length=128, augment=lambda b: b)(noisy_batch)["pixel_values"]
    for image, for_reading, for_training in zip(noisy, read, trained, strict=True):
        np.testing.assert_array_equal(for_reading, prepare(image))
        np.testing.assert_array_equal(for_training, prepare(image, denoise=False))
        assert not np.array_equal(for_reading, for_training)  # the noise filter ran for reading only


def test_labels_are_the_canonical_form(tiny_processor, batch):
    """Labels follow the current normalisation whatever form the dataset stores (an older build, a raw list)."""
    tokenizer = tiny_processor.tokenizer
    formulas = ["x^2+\\frac12", "f'(x)", "a _ b"][: len(batch["formula"])]
    features = Features({"image": Image(), "formula": Value("string")})
    raw = Dataset.from_dict({"image": batch["image"], "formula": formulas}, features=features)
    dataset = with_canonical_formulas(raw)
    assert [image.size for image in dataset["image"]] == [image.size for image in batch["image"]]
    dataset.set_transform(ProcessFormulas(tiny_processor, max_label_length=128))
    decoded = [tokenizer.decode(ids, skip_special_tokens=True) for ids in dataset[:]["labels"]]
    assert decoded == ["x ^ { 2 } + \\frac { 1 } { 2 }", "f ^ { \\prime } ( x )", "a _ { b }"][: len(decoded)]


def test_process_formulas_truncates_labels(tiny_processor, batch):
    full = ProcessFormulas(tiny_processor, max_label_length=128)(batch)["labels"]
    assert max(len(ids) for ids in full) > 5
    cut = ProcessFormulas(tiny_processor, max_label_length=5)(batch)["labels"]
    assert cut == [ids[:5] for ids in full]
    assert all(len(ids) == min(5, len(f)) for ids, f in zip(cut, full, strict=True))


def test_process_formulas_applies_augment_only_when_given(tiny_processor, batch):
    replacement = formula_image("augmented", (230, 70))
    seen = []

    def augment(b: dict) -> dict:
        seen.append(list(b["formula"]))
        return {**b, "image": [replacement] * len(b["image"])}

    expected = tiny_processor.image_processor.prepare(replacement)
    out = ProcessFormulas(tiny_processor, max_label_length=128, augment=augment)(batch)
    assert seen == [batch["formula"]]
    for pixels in out["pixel_values"]:
        np.testing.assert_array_equal(pixels, expected)

    plain = ProcessFormulas(tiny_processor, max_label_length=128)(batch)
    assert len(seen) == 1
    assert plain["pixel_values"][0].shape != expected.shape
    assert plain["labels"] == out["labels"]


def test_process_formulas_as_a_datasets_transform(tiny_processor):
    ds = load_formula_dataset(TINY_DATASET, split="train")
    ds.set_transform(ProcessFormulas(tiny_processor, max_label_length=128))
    example = ds[3]
    assert set(example) == {"pixel_values", "labels"}
    assert example["labels"][-1] == tiny_processor.tokenizer.eos_token_id
    assert example["pixel_values"].ndim == 2 and example["pixel_values"].max() == pytest.approx(1.0)


# FormulaCollator


def test_collator_pads_images_with_background(tiny_processor):
    rng = np.random.default_rng(0)
    small = rng.uniform(0.1, 1.0, size=(20, 37)).astype(np.float32)
    large = rng.uniform(0.1, 1.0, size=(45, 70)).astype(np.float32)
    collate = FormulaCollator(tiny_processor.image_processor)
    out = collate([{"pixel_values": small, "labels": [5, 6, 2]}, {"pixel_values": large, "labels": [7, 2]}])
    pixels = out["pixel_values"]
    assert pixels.shape == (2, 1, 48, 80)  # 45 -> 48 and 70 -> 80: multiples of 16
    torch.testing.assert_close(pixels[0, 0, :20, :37], torch.from_numpy(small))
    torch.testing.assert_close(pixels[1, 0, :45, :70], torch.from_numpy(large))
    assert pixels[0, 0, 20:].abs().sum() == 0 and pixels[0, 0, :, 37:].abs().sum() == 0
    assert pixels[1, 0, 45:].abs().sum() == 0 and pixels[1, 0, :, 70:].abs().sum() == 0
    assert torch.equal(out["labels"], torch.tensor([[5, 6, 2], [7, 2, -100]]))
    assert out["labels"].dtype == torch.long


def test_collator_masks_labels_where_each_formula_ended(tiny_processor, fixture_formulas):
    images = [formula_image(f, (100 + 30 * i, 40)) for i, f in enumerate(fixture_formulas[:4])]
    processed = ProcessFormulas(tiny_processor, max_label_length=128)(
        {"image": images, "formula": fixture_formulas[:4]}
    )
    features = [
        {"pixel_values": p, "labels": ids}
        for p, ids in zip(processed["pixel_values"], processed["labels"], strict=True)
    ]
    lengths = [len(ids) for ids in processed["labels"]]
    assert len(set(lengths)) > 1
    out = FormulaCollator(tiny_processor.image_processor)(features)
    labels = out["labels"]
    assert labels.shape == (4, max(lengths))
    for row, ids in enumerate(processed["labels"]):
        assert labels[row, : len(ids)].tolist() == ids
        assert (labels[row, len(ids) :] == -100).all()
    height, width = out["pixel_values"].shape[-2:]
    assert height % 16 == 0 and width % 16 == 0
    assert width >= max(p.shape[1] for p in processed["pixel_values"])


def test_collator_with_model_adds_decoder_inputs(tiny_processor, tiny_model):
    """Given the model, the batch holds the labels shifted right, as the model itself would build them: the Trainer
    needs them with label smoothing, where it keeps the labels from the model."""
    features = [
        {"pixel_values": np.ones((20, 30), dtype=np.float32), "labels": [5, 6, 7, 2]},
        {"pixel_values": np.ones((20, 40), dtype=np.float32), "labels": [8, 2]},
    ]
    out = FormulaCollator(tiny_processor.image_processor, model=tiny_model)(features)
    start, pad = tiny_model.config.decoder_start_token_id, tiny_model.config.pad_token_id
    assert out["decoder_input_ids"].tolist() == [[start, 5, 6, 7], [start, 8, 2, pad]]
    with torch.no_grad():
        shifted = tiny_model(pixel_values=out["pixel_values"], decoder_input_ids=out["decoder_input_ids"]).logits
        own = tiny_model(pixel_values=out["pixel_values"], labels=out["labels"]).logits
    torch.testing.assert_close(shifted, own)


def test_collator_without_labels_and_empty(tiny_processor):
    collate = FormulaCollator(tiny_processor.image_processor)
    out = collate([{"pixel_values": np.ones((33, 17), dtype=np.float32)}])
    assert set(out) == {"pixel_values"} and out["pixel_values"].shape == (1, 1, 48, 32)
    with pytest.raises(ValueError, match="empty"):
        collate([])


def test_size_sorted_pools_orders_runs_by_size():
    """Each run of batch_size holds neighbours in size order (so it pads little), runs come shuffled, every example
    stays with its labels, and a short run comes last."""
    rng = np.random.default_rng(0)
    shapes = [(int(rng.integers(1, 8)) * 16, int(rng.integers(20, 600))) for _ in range(22)]

    def process(batch):
        return {
            "pixel_values": [np.zeros(shapes[i], dtype=np.float32) for i in batch["index"]],
            "labels": [[i] for i in batch["index"]],
        }

    out = SizeSortedPools(process, batch_size=4, seed=0)({"index": list(range(22))})
    order = [ids[0] for ids in out["labels"]]
    assert sorted(order) == list(range(22))
    assert all(values.shape == shapes[i] for values, i in zip(out["pixel_values"], order, strict=True))
    ranked = sorted(range(22), key=lambda i: (shapes[i][0] // 16, shapes[i][1]))
    runs = [order[start : start + 4] for start in range(0, 22, 4)]
    expected_runs = [ranked[start : start + 4] for start in range(0, 22, 4)]
    assert runs[-1] == expected_runs[-1] and len(runs[-1]) == 2  # the short run, last
    assert sorted(runs[:-1]) == sorted(expected_runs[:-1]) and runs[:-1] != expected_runs[:-1]  # shuffled runs
    padded = sum(4 * max(shapes[i][0] for i in run) * max(shapes[i][1] for i in run) for run in runs[:-1])
    in_order = [list(range(start, start + 4)) for start in range(0, 20, 4)]
    unsorted = sum(4 * max(shapes[i][0] for i in run) * max(shapes[i][1] for i in run) for run in in_order)
    assert padded < 0.8 * unsorted


def test_size_sorted_stream_is_endless_and_batches_each_pass_anew():
    """Three passes over 20 examples: every example comes about three times (the shuffle buffer spans the pass
    boundaries), each run of 4 is size-sorted, and the passes are batched differently. The stream does not end."""
    shapes = [(16 * (1 + i % 3), 40 + 37 * i % 300) for i in range(20)]

    def process(batch):
        return {
            "pixel_values": [np.zeros(shapes[i], dtype=np.float32) for i in batch["index"]],
            "labels": [[i] for i in batch["index"]],
        }

    stream = size_sorted_stream(Dataset.from_dict({"index": list(range(20))}), process, batch_size=4, pool_batches=2)
    examples = list(itertools.islice(stream, 200))
    assert len(examples) == 200  # 10 passes and still going
    order = [example["labels"][0] for example in examples[:60]]
    assert set(Counter(order)) == set(range(20)) and set(Counter(order).values()) <= {2, 3, 4}
    runs = [order[start : start + 4] for start in range(0, 60, 4)]
    for run in runs:  # sorted within its pool: the run's sizes never fall
        keys = [(shapes[i][0] // 16, shapes[i][1]) for i in run]
        assert keys == sorted(keys)
    first, second = {tuple(sorted(run)) for run in runs[:5]}, {tuple(sorted(run)) for run in runs[5:10]}
    assert first != second
