"""data/pack.py on a small parquet dataset laid out as data.prepare writes it (no TeX needed)."""

import io
import json
import random

import pytest
from datasets import load_dataset
from PIL import Image

from data import pack
from data.prepare import write_shard


def image_bytes(index: int) -> bytes:
    """A PNG of noise (it does not compress, so a shard's size grows with its rows), a different size each."""
    buffer = io.BytesIO()
    Image.frombytes("L", (20 + index, 20), random.Random(index).randbytes((20 + index) * 20)).save(buffer, "PNG")
    return buffer.getvalue()


def write_split(folder, split: str, shard_rows: list[int]) -> None:
    start = 0
    for shard, count in enumerate(shard_rows):
        rows = {
            "image": [{"bytes": image_bytes(start + i), "path": None} for i in range(count)],
            "formula": [f"x _ {{ {start + i} }}" for i in range(count)],
            "source": ["arxiv-display"] * count,
            "style": ["{}"] * count,
        }
        write_shard(rows, folder / f"{split}-{shard:05d}-of-{len(shard_rows):05d}.parquet")
        start += count


@pytest.fixture()
def prepared(tmp_path):
    folder = tmp_path / "prepared" / "data"
    folder.mkdir(parents=True)
    write_split(folder, "train", [40, 40, 40, 4])
    write_split(folder, "validation", [30])
    write_split(folder, "test", [5])
    return tmp_path / "prepared"


def shard_bytes(prepared, name: str) -> int:
    return (prepared / "data" / name).stat().st_size


def test_packs_whole_train_shards_that_fit_and_sampled_validation_rows(prepared, tmp_path):
    output = tmp_path / "packed"
    whole = shard_bytes(prepared, "train-00000-of-00004.parquet")
    small = shard_bytes(prepared, "train-00003-of-00004.parquet")
    validation = pack.pack(prepared, tmp_path / "probe", 2**30, eval_samples=8, seed=1)["validation"]["bytes"]
    # Room for the validation rows, one whole train shard and the small last one, not for two whole ones.
    budget = validation + whole + small + whole // 2
    summary = pack.pack(prepared, output, budget, eval_samples=8, seed=1)

    assert summary["train"]["shards"] == ["train-00000-of-00004.parquet", "train-00003-of-00004.parquet"]
    assert summary["train"]["rows"] == 44 and summary["train"]["of_rows"] == 124
    assert summary["validation"]["rows"] == 8 and summary["validation"]["of_rows"] == 30
    assert summary["bytes"] <= budget
    assert json.loads((output / "pack.json").read_text()) == summary
    assert sorted(path.name for path in (output / "data").iterdir()) == [
        "train-00000-of-00004.parquet",
        "train-00003-of-00004.parquet",
        "validation-00000-of-00001.parquet",
    ]

    packed, original = load_dataset(str(output)), load_dataset(str(prepared))
    assert set(packed) == {"train", "validation"}
    # Rows are the prepared ones, images still decoded as images.
    train_formulas = set(original["train"]["formula"][:40] + original["train"]["formula"][120:])
    assert set(packed["train"]["formula"]) == train_formulas
    chosen = set(packed["validation"]["formula"])
    assert len(chosen) == 8 and chosen <= set(original["validation"]["formula"])
    row = packed["validation"][0]
    source = original["validation"][original["validation"]["formula"].index(row["formula"])]
    assert row["image"].size == source["image"].size and row["image"].tobytes() == source["image"].tobytes()


def test_validation_rows_depend_on_the_seed(prepared, tmp_path):
    one = pack.pack(prepared, tmp_path / "one", 10 * 2**20, eval_samples=5, seed=0)
    pack.pack(prepared, tmp_path / "two", 10 * 2**20, eval_samples=5, seed=1)
    assert one["train"]["rows"] == 124  # everything fits
    formulas = [set(load_dataset(str(tmp_path / name))["validation"]["formula"]) for name in ("one", "two")]
    assert formulas[0] != formulas[1]


def test_too_small_a_budget_is_a_clear_error(prepared, tmp_path):
    output = tmp_path / "packed"
    with pytest.raises(ValueError, match="holds no train shard"):
        pack.pack(prepared, output, 1024, eval_samples=5)
    assert not output.exists()  # nothing half-written is left


def test_existing_output_is_never_overwritten(prepared, tmp_path):
    output = tmp_path / "packed"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=str(output)):
        pack.pack(prepared, output, 2**20, eval_samples=5)
    assert (output / "keep.txt").read_text() == "mine"


def test_command_line_errors_name_the_path(tmp_path, capsys):
    with pytest.raises(SystemExit):
        pack.main(["--dataset", str(tmp_path / "missing"), "--output", str(tmp_path / "out"), "--max-mib", "1"])
    assert "missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pack.main(["--dataset", str(tmp_path), "--output", str(tmp_path / "out"), "--max-mib", "0"])
    assert "--max-mib (0.0)" in capsys.readouterr().err
