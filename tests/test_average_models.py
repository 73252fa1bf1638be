"""tools/average_models.py on two tiny model folders, run as a user runs it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling import Im2LatexForConditionalGeneration

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = "model.safetensors"


def average_models(*arguments) -> subprocess.CompletedProcess:
    command = [sys.executable, "tools/average_models.py", *map(str, arguments)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def two_models(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny model, and a copy whose floating-point tensors are all moved by random amounts."""
    other = tmp_path_factory.mktemp("other") / "model"
    shutil.copytree(tiny_model_dir, other)
    generator = torch.Generator().manual_seed(0)
    moved = {
        name: tensor + torch.randn(tensor.shape, generator=generator) if tensor.is_floating_point() else tensor + 7
        for name, tensor in load_file(other / WEIGHTS).items()
    }
    save_file(moved, other / WEIGHTS, metadata={"format": "pt"})
    return tiny_model_dir, other


def test_weighted_average_keeps_the_first_models_files(two_models, tmp_path):
    first, second = two_models
    done = average_models(first, second, "--weights", "0.25", "0.75", "--output", tmp_path / "avg")
    assert done.returncode == 0, done.stderr[-3000:]
    a, b, averaged = (load_file(folder / WEIGHTS) for folder in (first, second, tmp_path / "avg"))
    assert averaged.keys() == a.keys()
    for name, tensor in averaged.items():
        if tensor.is_floating_point():
            assert tensor.dtype == torch.float32
            torch.testing.assert_close(tensor, 0.25 * a[name] + 0.75 * b[name])
            assert not torch.equal(tensor, a[name]), name
        else:  # num_batches_tracked: the first model's
            assert torch.equal(tensor, a[name]), name
    for path in first.glob("*.json"):
        assert (tmp_path / "avg" / path.name).read_bytes() == path.read_bytes(), path.name
    model = Im2LatexForConditionalGeneration.from_pretrained(tmp_path / "avg")
    assert model.generation_config.max_length == 12  # tiny_model_dir's, as saved


def test_one_model_stored_in_bfloat16_loads_as_float32(two_models, tmp_path):
    first, _ = two_models
    done = average_models(first, "--dtype", "bfloat16", "--output", tmp_path / "bf16")
    assert done.returncode == 0, done.stderr[-3000:]
    original, stored = load_file(first / WEIGHTS), load_file(tmp_path / "bf16" / WEIGHTS)
    assert all(stored[name].dtype == torch.bfloat16 for name in stored if original[name].is_floating_point())
    assert all(torch.equal(stored[name], tensor.to(stored[name].dtype)) for name, tensor in original.items())
    assert (tmp_path / "bf16" / WEIGHTS).stat().st_size < 0.6 * (first / WEIGHTS).stat().st_size
    model = Im2LatexForConditionalGeneration.from_pretrained(tmp_path / "bf16")
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())


def test_bad_input_is_a_clear_error(two_models, tmp_path):
    first, second = two_models
    done = average_models(first, second, "--weights", "0.5", "0.6", "--output", tmp_path / "out")
    assert done.returncode == 2 and "summing to 1" in done.stderr
    done = average_models(first, tmp_path / "nowhere", "--output", tmp_path / "out")
    assert done.returncode == 2 and f"{tmp_path / 'nowhere'} has no model.safetensors" in done.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    done = average_models(first, "--output", tmp_path / "full")
    assert done.returncode == 2 and f"{tmp_path / 'full'} exists and is not empty" in done.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    shorter = tmp_path / "shorter"
    shutil.copytree(second, shorter)
    tensors = load_file(shorter / WEIGHTS)
    dropped = sorted(tensors)[0]
    save_file({name: t for name, t in tensors.items() if name != dropped}, shorter / WEIGHTS)
    done = average_models(first, shorter, "--output", tmp_path / "out")
    assert done.returncode == 2 and dropped in done.stderr
    assert not (tmp_path / "out").exists()
