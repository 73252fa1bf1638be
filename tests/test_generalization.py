"""data/generalization.py: styles and degradations outside the training mix, and the exclusion of known formulas."""

import io
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset
from PIL import Image

from data import generalization
from data.generalization import DEGRADATIONS, degrade, generalization_style
from data.prepare import overlap_key
from data.render import DENG, HELD_OUT_RELATIVES, VARIED_DPI, VARIED_FONTS, WIDE_FONTS, render

needs_tex = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")


def test_styles_are_unlike_the_training_styles() -> None:
    styles = [generalization_style(i, "x ^ { 2 }") for i in range(200)]
    assert all(style.dpi not in VARIED_DPI for style in styles)
    assert {style.math_version for style in styles} == {"normal", "bold", "sans"}
    assert {style.font for style in styles} - set(VARIED_FONTS) == {"charter", "utopia", "bookman"}
    # nor are they among the wider training fonts, nor are those fonts' near relatives (data.render)
    assert not set(WIDE_FONTS) & (set(generalization.FONTS) - set(VARIED_FONTS) | set(HELD_OUT_RELATIVES))
    assert styles == [generalization_style(i, "x ^ { 2 }") for i in range(200)]  # deterministic


@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_degradations_keep_the_size_and_decode(kind: str) -> None:
    clean = Image.new("L", (120, 40), 255)
    clean.paste(0, (20, 15, 100, 25))  # a black bar of ink
    data, file_format = degrade(clean, kind, np.random.default_rng(0))
    image = Image.open(io.BytesIO(data))
    assert image.format == file_format.upper() and image.size == clean.size and image.mode == "RGB"
    gray = np.asarray(image.convert("L"), dtype=float)
    ink, paper = gray[18:22, 30:90].mean(), gray[:10].mean()
    if kind == "dark-mode":
        assert ink > paper + 100
    else:
        assert paper > ink + 100
    if kind == "none":
        assert np.array_equal(gray, np.asarray(clean))


def test_unknown_degradation_is_refused() -> None:
    with pytest.raises(ValueError, match="'smudge'"):
        degrade(Image.new("L", (8, 8), 255), "smudge", np.random.default_rng(0))


@needs_tex
def test_every_style_renders() -> None:
    styles = {generalization_style(i, "f") for i in range(300)}
    formula = "\\int _ { 0 } ^ { 1 } \\frac { \\alpha x } { \\sqrt { 2 } } \\mathrm { d } x"
    ordered = sorted(styles, key=str)
    results = render([formula] * len(ordered), style=lambda i, f: ordered[i], progress=False)
    assert [r.error for r in results] == [None] * len(ordered)


@needs_tex
def test_builds_a_set_without_known_formulas(tmp_path: Path) -> None:
    formulas = tmp_path / "formulas"
    lists = {
        "arxiv/display.txt": ["a+b=c", "E = mc^2", "\\frac{1}{2}", "\\sqrt{x+1}", "\\notamacro"],
        "arxiv/inline.txt": ["\\alpha_{i}", "x^2"],
        "books/algebra_display.txt": ["\\int_0^1 f(x) dx"],
        "books/algebra_inline.txt": ["n!"],
        "qa/math_display.txt": ["\\sum_{k=1}^{n} k"],
        "qa/math_inline.txt": ["\\pi r^2"],
        "im2latex-100k/validation.txt": ["\\frac { 1 } { 2 }"],
        "im2latex-100k/test.txt": ["a + b = c"],
    }
    for name, lines in lists.items():
        (formulas / name).parent.mkdir(parents=True, exist_ok=True)
        (formulas / name).write_text("\n".join(lines) + "\n")
    dataset = tmp_path / "dataset"
    (dataset / "data").mkdir(parents=True)
    pq.write_table(pa.table({"formula": ["x ^ 2"]}), dataset / "data" / "train-00000-of-00001.parquet")

    output = tmp_path / "generalization"
    argv = ["--formulas", str(formulas), "--dataset", str(dataset), "--output", str(output), "--count", "20"]
    generalization.main([*argv, "--workers", "1"])

    test = load_dataset(str(output))["test"]
    known = {overlap_key(f) for f in ["a + b = c", "\\frac { 1 } { 2 }", "x ^ 2"]}
    assert not {overlap_key(f) for f in test["formula"]} & known
    # 7 of the 11 lines are new; the undefined macro fails in TeX and is counted
    assert len(test) == 7
    summary = json.loads((output / "summary.json").read_text())
    assert summary["images"] == 7 and summary["looks"]["skipped (TeX error)"] == 1
    assert sum(font["images"] for font in summary["fonts"].values()) == 7 and not summary["fonts_without_images"]
    looks = [json.loads(style) for style in test["style"]]
    assert {look["degradation"] for look in looks} <= set(DEGRADATIONS)
    assert all(isinstance(row["image"], Image.Image) for row in test)

    # The controls: the same formulas in the training styles and in the benchmark's look, undegraded.
    for style in ("varied", "deng"):
        control = tmp_path / style
        generalization.main(["--restyle", str(output), "--style", style, "--output", str(control), "--workers", "1"])
        restyled = load_dataset(str(control))["test"]
        assert restyled["formula"] == test["formula"] and restyled["source"] == test["source"]
        looks = [json.loads(look) for look in restyled["style"]]
        assert {look.pop("degradation") for look in looks} == {"none"}
        assert {look.pop("file_format") for look in looks} == {"png"}
        if style == "varied":
            assert {look["math_version"] for look in looks} == {"normal"}
            assert {look["font"] for look in looks} <= set(VARIED_FONTS)
            assert {look["dpi"] for look in looks} <= set(VARIED_DPI)
        else:
            assert looks == [asdict(DENG)] * len(test)


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no parquet shards under"):
        generalization.dataset_formulas(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=f"no test shards under {tmp_path / 'nowhere' / 'data'}"):
        generalization.set_formulas(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--output", "out"], "give --formulas and --dataset (or --restyle SET)"),
        (["--restyle", "set", "--dataset", "d", "--output", "out"], "give no --formulas or --dataset"),
    ],
)
def test_bad_arguments_are_refused(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        generalization.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
