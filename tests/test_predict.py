"""predict.py as a user runs it: `python predict.py --model DIR ...` from the repository root, on a tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
# Three images of different sizes, named so that sorted order differs from the order of creation.
IMAGES = {"c_wide.png": (260, 40), "a_square.png": (90, 80), "b_tall.png": (120, 120)}


def run_predict(*arguments: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "predict.py", *arguments], cwd=ROOT, input=stdin, capture_output=True, timeout=300
    )
    done.stdout, done.stderr = done.stdout.decode(), done.stderr.decode()
    return done


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir) -> Path:
    return tiny_model_dir


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for index, (name, size) in enumerate(IMAGES.items()):
        image = Image.new("L", size, 255)
        draw = ImageDraw.Draw(image)
        draw.text((6, size[1] // 3), ["x^2 + y", "a/b", "sum n"][index], fill=0)
        draw.line((4, size[1] - 8, size[0] - 4, size[1] - 8 - 10 * index), fill=0, width=2)
        image.save(folder / name)
    (folder / "notes.txt").write_text("not an image, and not an image suffix: skipped by the folder expansion")
    return folder


@pytest.fixture(scope="module")
def folder_json(model_dir, image_dir) -> list[dict]:
    """One JSON run over the folder, batched (all three images in one batch)."""
    done = run_predict("--model", str(model_dir), str(image_dir), "--format", "json", "--batch-size", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_folder_expands_to_sorted_images_as_json(folder_json, image_dir):
    assert [record["image"] for record in folder_json] == [str(image_dir / name) for name in sorted(IMAGES)]
    for record in folder_json:
        assert set(record) == {"image", "latex", "score", "seconds"}
        assert isinstance(record["latex"], str) and record["latex"].strip()
        assert isinstance(record["score"], float) and record["score"] <= 0.0
        assert record["seconds"] >= 0.0


def test_text_output_is_one_line_per_image_in_input_order(model_dir, image_dir, folder_json):
    """Files given one by one, in an order that is not sorted: the lines follow the arguments. The batch is the
    same as `folder_json`'s (all three images), so a second process must give the same readings (determinism)."""
    by_name = {Path(record["image"]).name: record["latex"] for record in folder_json}
    names = list(IMAGES)  # c, a, b
    done = run_predict("--model", str(model_dir), *(str(image_dir / name) for name in names), "--batch-size", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [by_name[name] for name in names]


def test_batch_size_does_not_change_the_readings(model_dir, image_dir, folder_json):
    """--batch-size 1 reads each image alone; `folder_json` read all three in one padded batch."""
    done = run_predict("--model", str(model_dir), str(image_dir), "--format", "json", "--batch-size", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    alone = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["image"] for r in alone] == [r["image"] for r in folder_json]
    assert [r["latex"] for r in alone] == [r["latex"] for r in folder_json]
    # The scores are not bit-identical: a batch is padded to its largest image and the encoder has no padding
    # mask, so cross-attention also sees the padding (a difference of about 1e-4 with this random model).
    for one, batched in zip(alone, folder_json, strict=True):
        assert one["score"] == pytest.approx(batched["score"], abs=1e-2)


def test_bad_inputs_are_reported_and_skipped_and_stdin_is_read(model_dir, image_dir, tmp_path):
    """A text file named .png and a missing path are reported on stderr; the good files and `-` (the bytes of one
    of them on stdin) are still read, in argument order, and the exit status is 1."""
    fake = tmp_path / "fake.png"
    fake.write_text("this is text, not a PNG")
    missing = tmp_path / "missing.png"
    square, wide = str(image_dir / "a_square.png"), str(image_dir / "c_wide.png")
    done = run_predict(
        *("--model", str(model_dir), square, str(fake), "-", str(missing), wide, "--format", "json"),
        stdin=Path(square).read_bytes(),
    )
    assert done.returncode == 1
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [record["image"] for record in records] == [square, "-", wide]
    assert records[1]["latex"] == records[0]["latex"] and records[1]["score"] == records[0]["score"]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2
    assert "fake.png" in errors[0] and "missing.png" in errors[1]
    assert "Traceback" not in done.stderr


def test_missing_model_folder_is_one_error_line(tmp_path, image_dir):
    missing = tmp_path / "no_model"
    done = run_predict("--model", str(missing), str(image_dir / "a_square.png"))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"error: model folder {missing} does not exist"]


def test_compact_style(model_dir):
    from modeling import to_compact

    image = "tests/fixtures/tiny_dataset/images/0000002.png"
    run = [sys.executable, "predict.py", "--model", str(model_dir), image]
    tokens = subprocess.run(run, capture_output=True, text=True, timeout=300)
    compact = subprocess.run([*run, "--style", "compact"], capture_output=True, text=True, timeout=300)
    assert tokens.returncode == 0 and compact.returncode == 0, compact.stderr[-2000:]
    assert tokens.stdout.strip() and compact.stdout.strip() == to_compact(tokens.stdout.strip())
