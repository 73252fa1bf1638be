"""evaluate.py end to end on a tiny random model and a tiny image folder, run as `python evaluate.py` from the root."""

import csv
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image, ImageDraw

import modeling.inference
from modeling.inference import Reading

ROOT = Path(__file__).resolve().parents[1]
METRIC_KEYS = {"bleu", "token_edit_similarity", "cer", "exact_match", "truncated_fraction", "enlarged_fraction"}
RUN_KEYS = {
    "num_samples", "num_skipped", "split", "dataset", "model", "num_beams", "balanced_groups", "min_glyph_height",
    "denoise_strength", "max_token_repeats", "max_spacing_run", "seconds", "formulas_per_second",
}  # fmt: skip


def run_evaluate(*arguments: str) -> subprocess.CompletedProcess:
    """`python evaluate.py ...` in the repository root, so the root (and its evaluate.py) is first on sys.path."""
    return subprocess.run(
        [sys.executable, "evaluate.py", *arguments], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.fixture()
def model_dir(tiny_model, tiny_processor, tmp_path) -> Path:
    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    return folder


@pytest.fixture()
def dataset_dir(fixture_formulas, tmp_path) -> Path:
    """An image folder: images/N.png drawn with PIL and metadata.csv (`file_name,formula`)."""
    folder = tmp_path / "dataset"
    (folder / "images").mkdir(parents=True)
    rows = []
    for index, formula in enumerate(fixture_formulas[:4]):
        image = Image.new("L", (16 + 7 * len(formula), 40), 255)
        ImageDraw.Draw(image).text((8, 12), formula, fill=0)
        image.save(folder / "images" / f"{index}.png")
        rows.append({"file_name": f"images/{index}.png", "formula": formula})
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=["file_name", "formula"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


def test_evaluate_writes_metrics_and_predictions(model_dir, dataset_dir, fixture_formulas, tmp_path):
    output = tmp_path / "eval"
    done = run_evaluate(
        *("--model", str(model_dir), "--dataset", str(dataset_dir), "--split", "test", "--output", str(output)),
        *("--max-samples", "3", "--batch-size", "2", "--num-beams", "2", "--device", "cpu", "--min-bleu", "0.99"),
        *("--max-spacing-run", "5"),
    )
    # A random model cannot reach BLEU 0.99: the files are written, then the exit status says it failed.
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: BLEU ") and "--min-bleu 0.99" in done.stderr
    assert "Traceback" not in done.stderr

    metrics = json.loads((output / "metrics.json").read_text())
    assert set(metrics) == METRIC_KEYS | RUN_KEYS
    assert metrics["num_samples"] == 3 and metrics["num_skipped"] == 0 and metrics["num_beams"] == 2
    assert metrics["balanced_groups"] is False and metrics["min_glyph_height"] == 12  # the processor's
    assert metrics["denoise_strength"] == 1.0
    assert metrics["max_token_repeats"] == 16 and metrics["max_spacing_run"] == 5  # the model's, and the flag's
    assert json.loads((model_dir / "config.json").read_text())["max_spacing_run"] == 8  # the folder unchanged
    assert metrics["split"] == "test" and metrics["dataset"] == str(dataset_dir) and metrics["model"] == str(model_dir)
    assert 0.0 <= metrics["bleu"] < 0.99 and 0.0 <= metrics["token_edit_similarity"] <= 1.0
    assert metrics["cer"] >= 0.0 and 0.0 <= metrics["exact_match"] <= 1.0
    assert 0.0 <= metrics["truncated_fraction"] <= 1.0 and metrics["formulas_per_second"] > 0
    for key in METRIC_KEYS:
        assert f"{key} " in done.stdout  # the printed table

    records = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert [record["image"] for record in records] == ["images/0.png", "images/1.png", "images/2.png"]
    assert [record["reference"] for record in records] == fixture_formulas[:3]
    assert all(set(record) == {"image", "reference", "prediction", "truncated", "enlarged"} for record in records)
    assert metrics["enlarged_fraction"] == pytest.approx(sum(record["enlarged"] for record in records) / 3)
    assert all(isinstance(record["prediction"], str) for record in records)

    # The metrics are those of the written predictions, computed by the shared module.
    from data.metrics import compute_formula_metrics

    expected = compute_formula_metrics([r["prediction"] for r in records], [r["reference"] for r in records])
    assert {key: metrics[key] for key in expected} == pytest.approx(expected)


def brace_depths(formula: str) -> list[int]:
    depths, depth = [], 0
    for token in formula.split():
        depth += (token == "{") - (token == "}")
        depths.append(depth)
    return depths


@pytest.fixture()
def closing_model_dir(tiny_model, tiny_processor, tmp_path) -> Path:
    """The tiny model with `}` scored twice as high as the token it writes first: it closes braces it never opened."""
    pixel_values = tiny_processor(images=Image.new("L", (100, 40), 255)).pixel_values
    favourite = tiny_model.generate(pixel_values=pixel_values, max_new_tokens=1)[0, 1]
    closing = tiny_processor.tokenizer.convert_tokens_to_ids("▁}")
    with torch.no_grad():
        weight = tiny_model.get_output_embeddings().weight
        weight[closing] = 2 * weight[favourite]
    folder = tmp_path / "closing-model"
    tiny_model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    return folder


def test_balanced_groups_keeps_braces_balanced(closing_model_dir, dataset_dir, tmp_path):
    config = (closing_model_dir / "config.json").read_text()
    for flag, balanced in (([], False), (["--balanced-groups"], True)):
        output = tmp_path / f"eval-{balanced}"
        done = run_evaluate(
            *("--model", str(closing_model_dir), "--dataset", str(dataset_dir), "--split", "test"),
            *("--output", str(output), "--num-beams", "1", "--device", "cpu", *flag),
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads((output / "metrics.json").read_text())["balanced_groups"] is balanced
        records = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
        depths = [brace_depths(record["prediction"]) for record in records]
        # Without the flag the model closes braces that were never opened; with it, never.
        assert all(min(row, default=0) >= 0 for row in depths) == balanced, records
        assert all(record["truncated"] or not row or row[-1] == 0 for record, row in zip(records, depths, strict=True))
    assert (closing_model_dir / "config.json").read_text() == config  # the flag leaves the model folder as it was


@pytest.fixture(scope="module")
def evaluate_script():
    """The root script as a module under another name: `evaluate` is the library's (see data.metrics)."""
    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--model": "no/such/dir"}, "error: model folder no/such/dir does not exist"),
        ({"--dataset": "no/such/data"}, "error: dataset folder no/such/data does not exist"),
        ({"--model": "DATASET"}, "is not a saved model folder (no config.json)"),
        ({"--dataset": "PARQUET"}, "has no split 'test'; it has ['train']"),
        ({"--dataset": "MODEL"}, "could not read the dataset"),
        ({"--formula-column": "latex"}, "has no formula column 'latex'"),
        ({"--batch-size": "0"}, "error: --batch-size must be at least 1, got 0"),
        ({"--min-glyph-height": "-1"}, "error: --min-glyph-height must be at least 0, got -1"),
        ({"--denoise-strength": "-0.5"}, "error: --denoise-strength must be at least 0, got -0.5"),
        ({"--max-spacing-run": "0"}, "error: --max-spacing-run must be at least 1, got 0"),
    ],
)
def test_bad_arguments_exit_2(change, message, evaluate_script, model_dir, dataset_dir, tmp_path, capsys):
    arguments = {"--model": str(model_dir), "--dataset": str(dataset_dir), "--output": str(tmp_path / "out")}
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    Dataset.from_dict({"image": ["0.png"], "formula": ["x"]}).to_parquet(parquet / "train.parquet")
    places = {"MODEL": str(model_dir), "DATASET": str(dataset_dir), "PARQUET": str(parquet)}
    arguments.update({key: places.get(value, value) for key, value in change.items()})
    assert evaluate_script.main([item for pair in arguments.items() for item in pair]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after any progress bar of the loading
    assert error.startswith("error: ") and message in error
    assert not (tmp_path / "out").exists()


def test_rendering_without_tex_exits_2(evaluate_script, model_dir, dataset_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluate_script.shutil, "which", lambda name: None)
    arguments = ["--model", str(model_dir), "--dataset", str(dataset_dir), "--output", str(tmp_path / "out")]
    assert evaluate_script.main([*arguments, "--image-match"]) == 2
    assert "error: --image-match renders formulas with pdflatex, which is not on PATH" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_batches_group_images_by_size(evaluate_script):
    def png(width: int, height: int) -> dict:
        buffer = io.BytesIO()
        Image.new("L", (width, height), 255).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    broken = {"bytes": b"not an image", "path": None}
    dataset = Dataset.from_dict({"image": [png(300, 40), png(50, 40), broken, png(120, 60)]})
    assert evaluate_script.by_size(dataset) == [2, 1, 3, 0]  # the unreadable one first: it is reported later


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_compile_check(evaluate_script):
    predictions = ["x ^ { 2 }", "\\frac { a", "\\input { / e t c / p a s s w d }", "\\nosuchmacro"]
    records = [{"reference": "x", "prediction": prediction} for prediction in predictions]
    evaluate_script.check_renders(records, compare=False)
    assert [record["compiles"] for record in records] == [True, False, False, False]
    assert not any("image_match" in record for record in records)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_image_match_compares_renders(evaluate_script):
    pairs = [
        ("x ^ { 2 }", "x ^ { 2 }", True),
        ("x _ { j } ^ { i }", "x ^ { i } _ { j }", True),  # other tokens, same picture
        ("\\left| a \\right| ,", "| a | \\, ,", True),  # an Inner atom before a comma gets a thin space
        ("a b", "a \\, b", False),  # a thin space shows
        ("a + b", "a - b", False),
        ("a + b", "\\frac { a", False),  # the prediction does not render
        ("\\nosuchmacro", "a", None),  # the reference does not render: left out
    ]
    records = [{"reference": r, "prediction": p, "truncated": False} for r, p, _ in pairs]
    evaluate_script.check_renders(records, compare=True)
    assert [record.get("image_match") for record in records] == [match for *_, match in pairs]
    assert [record["compiles"] for record in records] == [True, True, True, True, True, False, True]
    metrics = evaluate_script.score(records)
    assert metrics["image_exact_match"] == pytest.approx(3 / 6) and metrics["image_num_samples"] == 6
    assert metrics["compile_fraction"] == pytest.approx(6 / 7)
    assert "image_exact_match" not in evaluate_script.score(records[6:])  # no reference rendered


@pytest.fixture()
def styled_dataset_dir(fixture_formulas, tmp_path) -> Path:
    """A parquet folder as `data.generalization` writes one: `source` and a JSON `style` per image."""
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    images, styles = [], []
    for index, formula in enumerate(fixture_formulas[:5]):
        image = Image.new("L", (16 + 7 * len(formula), 40), 255)
        ImageDraw.Draw(image).text((8, 12), formula, fill=0)
        images.append(image)
        styles.append(json.dumps({"dpi": [100, 90, 280][index % 3], "degradation": "none"}))
    features = Features(
        {"image": ImageFeature(), "formula": Value("string"), "source": Value("string"), "style": Value("string")}
    )
    rows = {"image": images, "formula": fixture_formulas[:5], "source": ["a", "b", "a", "b", "a"], "style": styles}
    folder = tmp_path / "styled"
    (folder / "data").mkdir(parents=True)
    Dataset.from_dict(rows, features=features).to_parquet(folder / "data" / "test-00000-of-00001.parquet")
    return folder


def test_group_by_scores_each_value(evaluate_script, model_dir, styled_dataset_dir, tmp_path, capsys):
    output = tmp_path / "eval"
    arguments = ["--model", str(model_dir), "--dataset", str(styled_dataset_dir), "--output", str(output)]
    assert evaluate_script.main([*arguments, "--group-by", "style.dpi", "--group-by", "source"]) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    records = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert [record["style.dpi"] for record in records] == ["100", "90", "280", "100", "90"]
    assert [record["source"] for record in records] == ["a", "b", "a", "b", "a"]
    assert list(metrics["by"]["style.dpi"]) == ["90", "100", "280"]  # numbers in numeric order
    assert list(metrics["by"]["source"]) == ["a", "b"]

    from data.metrics import compute_formula_metrics

    for field, table in metrics["by"].items():
        assert sum(row["num_samples"] for row in table.values()) == 5
        for value, row in table.items():
            group = [record for record in records if record[field] == value]
            expected = compute_formula_metrics([r["prediction"] for r in group], [r["reference"] for r in group])
            assert row["num_samples"] == len(group)
            assert {key: row[key] for key in expected} == pytest.approx(expected)
    printed = capsys.readouterr().out
    assert "style.dpi" in printed and "source" in printed


@pytest.mark.parametrize(
    "field, message",
    [
        ("look", "--group-by look: the dataset has no column 'look'"),
        ("source.dpi", "--group-by source.dpi: column 'source' holds 'a', not a JSON object"),
        (
            "style.font",
            '--group-by style.font: \'{"dpi": 100, "degradation": "none"}\' in column \'style\' has no key',
        ),
    ],
)
def test_bad_group_by_exits_2(field, message, evaluate_script, model_dir, styled_dataset_dir, tmp_path, capsys):
    arguments = ["--model", str(model_dir), "--dataset", str(styled_dataset_dir), "--output", str(tmp_path / "out")]
    assert evaluate_script.main([*arguments, "--group-by", field]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_image_match_by_group(evaluate_script, model_dir, styled_dataset_dir, tmp_path, capsys):
    output = tmp_path / "eval"
    arguments = ["--model", str(model_dir), "--dataset", str(styled_dataset_dir), "--output", str(output)]
    assert evaluate_script.main([*arguments, "--image-match", "--group-by", "source"]) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    records = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert all(isinstance(record["image_match"], bool) and "compiles" in record for record in records)
    assert metrics["image_num_samples"] == 5
    assert metrics["image_exact_match"] == pytest.approx(sum(r["image_match"] for r in records) / 5)
    for value, row in metrics["by"]["source"].items():
        group = [record["image_match"] for record in records if record["source"] == value]
        assert row["image_exact_match"] == pytest.approx(sum(group) / len(group))
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("source"))
    assert header.split() == ["source", "n", "bleu", "tes", "cer", "exact", "image"]


def test_rescore_scores_saved_predictions_again(evaluate_script, model_dir, styled_dataset_dir, tmp_path, capsys):
    run = tmp_path / "run"
    arguments = ["--model", str(model_dir), "--dataset", str(styled_dataset_dir), "--output", str(run)]
    assert evaluate_script.main([*arguments, "--group-by", "source"]) == 0
    saved = json.loads((run / "metrics.json").read_text())
    records = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    # As if the canonical form had changed so that two readings now equal their references.
    for record in records[:2]:
        record["prediction"] = record["reference"]
    (run / "predictions.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))

    output = tmp_path / "rescored"
    assert (
        evaluate_script.main(
            ["--rescore", str(run / "predictions.jsonl"), "--output", str(output), "--group-by", "source"]
        )
        == 0
    )
    metrics = json.loads((output / "metrics.json").read_text())

    from data.metrics import compute_formula_metrics

    expected = compute_formula_metrics([r["prediction"] for r in records], [r["reference"] for r in records])
    assert {key: metrics[key] for key in expected} == pytest.approx(expected)
    assert metrics["exact_match"] >= 2 / 5 and metrics["exact_match"] != saved["exact_match"]  # the edits count
    assert {key: metrics[key] for key in RUN_KEYS} == {key: saved[key] for key in RUN_KEYS}  # the run, as it was
    assert metrics["rescored_from"] == str(run / "predictions.jsonl")
    for value, row in metrics["by"]["source"].items():
        group = [record for record in records if record["source"] == value]
        assert row["num_samples"] == len(group)
        assert row["exact_match"] == pytest.approx(
            compute_formula_metrics([r["prediction"] for r in group], [r["reference"] for r in group])["exact_match"]
        )
    assert [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()] == records


@pytest.mark.parametrize(
    "arguments, message",
    [
        ([], "give --model and --dataset, or --rescore PREDICTIONS"),
        (["--rescore", "RUN", "--model", "MODEL"], "--rescore scores saved predictions: it takes no --model"),
        (["--rescore", "RUN", "--max-spacing-run", "8"], "--rescore scores saved predictions: it takes no --model"),
        (["--rescore", "MISSING"], "no such file"),
        (["--rescore", "RUN", "--group-by", "style.dpi"], "line 1 has no style.dpi"),
        (["--rescore", "BROKEN"], "line 2 is not JSON"),
    ],
)
def test_bad_rescore_exits_2(arguments, message, evaluate_script, model_dir, tmp_path, capsys):
    run = tmp_path / "predictions.jsonl"
    run.write_text(json.dumps({"image": 0, "reference": "x", "prediction": "x", "truncated": False}) + "\n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(run.read_text() + "{\n")
    places = {"RUN": str(run), "MODEL": str(model_dir), "MISSING": str(tmp_path / "none.jsonl"), "BROKEN": str(broken)}
    arguments = [places.get(argument, argument) for argument in arguments]
    assert evaluate_script.main([*arguments, "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and message in error
    assert not (tmp_path / "out").exists()


def test_min_glyph_height_overrides_the_processor(evaluate_script, model_dir, tmp_path, monkeypatch):
    # Lines of small glyphs, which the processor enlarges, read by a stand-in that is surer of taller images.
    folder = tmp_path / "small"
    folder.mkdir()
    texts = {"0.png": ("x+1\ny-2\nz=3", (200, 60)), "1.png": ("a/b\nc", (120, 60))}
    for name, (text, size) in texts.items():
        image = Image.new("L", size, 255)
        ImageDraw.Draw(image).text((8, 8), text, fill=0)
        image.save(folder / name)
    (folder / "metadata.csv").write_text("file_name,formula\n0.png,x\n1.png,x\n", encoding="utf-8")

    def taller_is_surer(model, processor, views, bucket, generate_kwargs):
        return [Reading("x", float(view.shape[0]), False) for view in views]

    monkeypatch.setattr(modeling.inference, "_generate", taller_is_surer)
    for given, expected in ((None, (12, 1.0)), ("0", (0, 0.0))):
        output = tmp_path / f"eval-{given}"
        arguments = ["--model", str(model_dir), "--dataset", str(folder), "--output", str(output), "--num-beams", "1"]
        assert evaluate_script.main(arguments + (["--min-glyph-height", given] if given else [])) == 0
        metrics = json.loads((output / "metrics.json").read_text())
        assert (metrics["min_glyph_height"], metrics["enlarged_fraction"]) == expected


def test_denoise_strength_overrides_the_processor(evaluate_script, model_dir, tmp_path, monkeypatch):
    # A line of text in wide margins, speckled: kept noisy, the speckle widens the crop; filtered, it does not.
    folder = tmp_path / "noisy"
    folder.mkdir()
    page = Image.new("L", (400, 80), 255)
    ImageDraw.Draw(page).text((150, 30), "x + y = z", fill=0)
    noise = np.random.default_rng(0).normal(0.0, 14.0, (80, 400))
    Image.fromarray(np.clip(np.asarray(page) + noise, 0, 255).astype(np.uint8)).save(folder / "0.png")
    (folder / "metadata.csv").write_text("file_name,formula\n0.png,x\n", encoding="utf-8")

    def width_reader(model, processor, views, bucket, generate_kwargs):  # reads each view as its width
        return [Reading(str(view.shape[1]), 0.0, False) for view in views]

    monkeypatch.setattr(modeling.inference, "_generate", width_reader)
    widths = {}
    for given in (None, "0"):
        output = tmp_path / f"eval-{given}"
        arguments = ["--model", str(model_dir), "--dataset", str(folder), "--output", str(output), "--num-beams", "1"]
        assert evaluate_script.main(arguments + (["--denoise-strength", given] if given else [])) == 0
        assert json.loads((output / "metrics.json").read_text())["denoise_strength"] == (1.0 if given is None else 0)
        prediction = json.loads((output / "predictions.jsonl").read_text().splitlines()[0])["prediction"]
        widths[given] = int(prediction.replace(" ", ""))
    assert widths[None] < widths["0"] / 2
