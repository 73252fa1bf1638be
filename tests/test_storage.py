"""Tests for data.storage (image formats through `datasets`) and data.coverage (short formulas per symbol)."""

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset
from PIL import Image

from data.coverage import coverage_formulas, vocabulary
from data.storage import FORMATS, encode_image, to_bilevel

needs_tex = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")


@pytest.fixture(scope="module")
def rendered(fixture_formulas) -> list[tuple[str, Image.Image]]:
    pytest.importorskip("pymupdf")
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed")
    from data.render import render

    results = render(fixture_formulas, "deng", workers=1, progress=False)
    return [(formula, r.image) for formula, r in zip(fixture_formulas, results, strict=True) if r.image is not None]


@needs_tex
@pytest.mark.parametrize("image_format", FORMATS)
def test_formats_round_trip_through_datasets(tmp_path: Path, fixture_formulas, image_format: str) -> None:
    from data.prepare import write_split
    from data.render import render

    pairs = [(formula, "fixture") for formula in fixture_formulas[:4]]
    report = write_split(pairs, "deng", tmp_path / "data", "train", 1, 3, image_format=image_format)
    assert report["images"] == 4 and not report["skipped"] and not report["fonts_without_images"]
    assert report["fonts"] == {"cm": {"images": 4, "skipped": 0}}
    assert len(list((tmp_path / "data").glob("train-*.parquet"))) == 2

    train = load_dataset(str(tmp_path))["train"]
    assert train.features["image"].__class__.__name__ == "Image"
    originals = [r.image for r in render([f for f, _ in pairs], "deng", workers=1, progress=False)]
    assert train["formula"] == [f for f, _ in pairs]
    for row, original in zip(train, originals, strict=True):
        image = row["image"]
        assert image.size == original.size
        expected = original if image_format == "png" else to_bilevel(original)
        assert image.mode == ("L" if image_format == "png" else "1")
        np.testing.assert_array_equal(np.asarray(image.convert("L")), np.asarray(expected.convert("L")))


def test_bilevel_formats_are_dense(rendered) -> None:
    sizes = {fmt: np.mean([len(encode_image(image, fmt)) for _, image in rendered]) for fmt in FORMATS}
    # 200 dpi formulas of up to ~40 tokens: the measured means are ~1.8 KB (png), ~480 B (png1), ~330 B (g4).
    assert sizes["g4"] < 450, sizes
    assert sizes["g4"] < 0.8 * sizes["png1"] < 0.5 * sizes["png"], sizes


def test_g4_keeps_every_pixel_of_the_bilevel_image() -> None:
    rng = np.random.default_rng(0)
    pixels = np.where(rng.random((37, 1500)) < 0.1, 0, 255).astype(np.uint8)  # wider than a 16-bit strip row
    stored = Image.open(io.BytesIO(encode_image(Image.fromarray(pixels), "g4")))
    assert stored.format == "TIFF" and stored.mode == "1"
    np.testing.assert_array_equal(np.asarray(stored.convert("L")), pixels)
    with pytest.raises(ValueError, match="unknown image format"):
        encode_image(Image.fromarray(pixels), "jpeg")


FORMULAS = [
    "\\frac { a } { b } + \\alpha",
    "x ^ { 2 } = \\mathbf { v }",
    "\\frac { 1 } { 2 } \\, \\mathbf { v }",
    "\\left( x \\right) \\leq y",
    "{ \\bf y } \\, z",
    "\\begin{matrix} { 1 } & { 2 } \\\\ \\end{matrix}",
]


def test_coverage_shows_each_symbol_alone_and_in_context() -> None:
    per_token = 4
    produced = coverage_formulas(FORMULAS, per_token=per_token, seed=0)
    assert len(produced) == len(set(produced))
    vocab = vocabulary(FORMULAS)
    assert "{" not in vocab and "\\frac" in vocab and "&" in vocab
    for token in vocab:
        containing = [f for f in produced if token in f.split()]
        assert len(containing) >= per_token, (token, containing)
    # Units come from how the data uses each token.
    for alone in ("\\frac { a } { b }", "\\mathbf { v }", "\\left( x \\right)", "{ \\bf y }", "\\alpha", "\\leq"):
        assert alone in produced, alone
    assert "\\begin{matrix} { 1 } & { 2 } \\\\ \\end{matrix}" in produced  # & and \\ take their environment
    assert "x ^ { 2 }" in produced  # a script brings its base
    assert all(f.split() != ["\\,"] for f in produced)  # spacing only between symbols
    assert any(f in ("a \\, b", "x \\, y", "2 \\, n", "( a \\, b )", "f \\, g", "A \\, B") for f in produced)
    assert any(f != unit and unit in f for f in produced for unit in ("\\alpha",))  # and in context


def test_coverage_is_deterministic_and_respects_exclusions() -> None:
    first = coverage_formulas(FORMULAS, per_token=3, seed=1)
    assert first == coverage_formulas(FORMULAS, per_token=3, seed=1)
    assert coverage_formulas(FORMULAS, per_token=0) == []
    excluded = coverage_formulas(FORMULAS, per_token=3, seed=1, exclude={"\\alpha", "x^{\\alpha}"})
    assert "\\alpha" not in excluded and "x ^ { \\alpha }" not in excluded
    assert sum("\\alpha" in f.split() for f in excluded) >= 3  # other contexts take their place
