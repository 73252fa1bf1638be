"""data/prepare.py on a tiny formula folder laid out like the shared one: splits, leak check, summary.

Rendering runs pdflatex (skipped without it); the tests that only need the formula selection record what would be
rendered instead.
"""

import json
import re
import shutil
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset
from PIL import Image

from data import prepare
from data.coverage import coverage_formulas
from data.prepare import overlap_key, squash
from data.render import DENG, RenderStyle, wide_style
from data.spacing import has_hand_spacing, without_spacing

# Raw lists, as in ../shared/data/formulas. The benchmark lists are in canonical token form already.
LISTS = {
    "im2latex-100k/validation.txt": ["\\frac { a } { b }", "\\frac {", "y = m x + c"],
    # "x ^ { 0 }" is also what `data.coverage` makes of the training token "0" (in "\\int _ { 0 } ^ { 1 } ...").
    "im2latex-100k/test.txt": ["a + b = c", "x ^ { 0 }"],
    "im2latex-100k/train_sample.txt": ["\\beta"],
    # "a+b=c" is the test formula "a + b = c" up to whitespace; "\\frac {" cannot be normalised;
    # "\\notamacro x" normalises but TeX cannot render it.
    "arxiv/display.txt": ["a+b=c", "E = m c ^ 2", "\\frac {", "\\sqrt{x}", "", "\\notamacro x"],
    "arxiv/inline.txt": ["\\alpha_{i}", "E=mc^2"],  # the second is a duplicate of an arxiv-display formula
    "books/algebra_display.txt": ["\\int_0^1 f(x) dx"],
    "books/algebra_inline.txt": ["n!"],
    "qa/math_display.txt": ["\\sum_{k=1}^{n} k"],
    "qa/math_inline.txt": ["\\pi r^2"],
    "crohme/crohme_train_2013_2014.txt": ["\\sqrt{2}"],
}
# What train should hold with --max-train 20 (every per-source share is at least the source's unique formulas).
TRAIN = {
    "E = m c ^ { 2 }": "arxiv-display",
    "\\sqrt { x }": "arxiv-display",
    "\\alpha _ { i }": "arxiv-inline",
    "\\int _ { 0 } ^ { 1 } f ( x ) d x": "books-display",
    "n !": "books-inline",
    "\\sum _ { k = 1 } ^ { n } k": "qa-display",
    "\\pi r ^ { 2 }": "qa-inline",
    "\\sqrt { 2 }": "crohme",
    "\\beta": "im2latex-train",
}


def write_lists(root: Path) -> Path:
    for name, lines in LISTS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


BENCHMARK = {squash(f) for name in ("validation", "test") for f in LISTS[f"im2latex-100k/{name}.txt"]}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A real build, without the coverage formulas (so that train is exactly `TRAIN`)."""
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed")
    root = tmp_path_factory.mktemp("prepare")
    formulas = write_lists(root / "formulas")
    output = root / "dataset"
    options = ("--max-train", "20", "--workers", "1", "--coverage", "0")
    prepare.main(["--formulas", str(formulas), "--output", str(output), *options])
    return output


def select(tmp_path: Path, monkeypatch, *options: str) -> dict:
    """`prepare.main` with `write_split` replaced by a recorder, so nothing is rendered. Returns split ->
    (formulas, style, image format), and the summary."""
    recorded = {}

    def record(formulas, style, folder, name, workers, chunk, image_format="g4"):
        recorded[name] = (list(formulas), style, image_format)
        return {"images": len(formulas), "skipped": {}, "fonts": {}, "fonts_without_images": {}}

    monkeypatch.setattr(prepare, "write_split", record)
    formulas = write_lists(tmp_path / "formulas")
    prepare.main(["--formulas", str(formulas), "--output", str(tmp_path / "out"), *options])
    recorded["summary"] = json.loads((tmp_path / "out" / "summary.json").read_text())
    return recorded


def test_splits_load_with_datasets(prepared):
    ds = load_dataset(str(prepared))
    assert set(ds) == {"train", "validation", "test"}
    for split in ds.values():
        assert split.column_names == ["image", "formula", "source", "style"]
    image = ds["test"][0]["image"]  # benchmark images: grayscale PNG, as rendered
    assert isinstance(image, Image.Image) and image.mode == "L" and image.width > image.height > 8
    image = ds["train"][0]["image"]  # train images: bilevel (g4) by default
    assert isinstance(image, Image.Image) and image.mode == "1" and image.width > 8 and image.height > 8
    assert sorted(ds["validation"]["formula"]) == ["\\frac { a } { b }", "y = m x + c"]  # the broken one skipped
    assert sorted(ds["test"]["formula"]) == sorted(LISTS["im2latex-100k/test.txt"])
    assert set(ds["validation"]["source"]) == set(ds["test"]["source"]) == {"im2latex-100k"}
    assert {json.loads(style)["dpi"] for style in ds["test"]["style"]} == {DENG.dpi}
    assert json.loads(ds["test"]["style"][0]) == asdict(DENG)


def test_train_is_canonical_unique_and_benchmark_free(prepared):
    train = load_dataset(str(prepared), split="train")
    assert dict(zip(train["formula"], train["source"], strict=True)) == TRAIN
    assert len(train) == len(TRAIN)  # no duplicate, no unrenderable formula
    assert not {squash(f) for f in train["formula"]} & BENCHMARK
    styles = [RenderStyle(**json.loads(style)) for style in train["style"]]
    assert not any(style.fixed_cmex for style in styles)  # the varied look, not Deng's
    assert len({(style.font, style.font_size, style.dpi, style.display) for style in styles}) > 1


def test_summary_counts(prepared):
    summary = json.loads((prepared / "summary.json").read_text())
    assert {name: summary[name]["images"] for name in ("train", "validation", "test")} == {
        "train": len(TRAIN),
        "validation": 2,
        "test": 2,
    }
    for name in ("train", "validation", "test"):
        size = sum(path.stat().st_size for path in (prepared / "data").glob(f"{name}-*.parquet"))
        assert summary[name]["bytes"] == size > 0
        assert summary[name]["bytes_per_image"] == round(size / summary[name]["images"])
    assert [summary[name]["image_format"] for name in ("train", "validation", "test")] == ["g4", "png", "png"]
    assert "coverage_formulas" not in summary
    assert summary["seconds"] >= 0
    # every skipped line is counted, with an example
    assert summary["train_lines_skipped"] == {
        "empty": 1,
        "not normalisable": 1,
        "duplicate": 1,
        "benchmark formula removed": 1,
    }
    assert {reason: entry["count"] for reason, entry in summary["train"]["skipped"].items()} == {"TeX error": 1}
    assert "notamacro" in summary["train"]["skipped"]["TeX error"]["example"]
    assert summary["validation"]["skipped"]["TeX error"]["count"] == 1
    assert summary["test"]["skipped"] == {}
    # the images and skips of every font (the train split's varied ones; the benchmark's Computer Modern)
    assert sum(font["images"] for font in summary["train"]["fonts"].values()) == len(TRAIN)
    assert sum(font["skipped"] for font in summary["train"]["fonts"].values()) == 1
    assert summary["test"]["fonts"] == {"cm": {"images": 2, "skipped": 0}}
    assert all(summary[name]["fonts_without_images"] == {} for name in ("train", "validation", "test"))
    assert sorted(path.name for path in (prepared / "data").iterdir()) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
    ]


def test_coverage_formulas_join_train_and_stay_benchmark_free(tmp_path, monkeypatch):
    selected = select(tmp_path, monkeypatch, "--max-train", "20")  # the default --coverage
    train, style, image_format = selected["train"]
    assert (style, image_format) == ("varied", "g4")
    sources = dict(train)
    assert len(sources) == len(train)  # unique
    # Selected before rendering: "\\notamacro x" is in, TeX drops it later.
    assert {f: s for f, s in sources.items() if s != "coverage"} == {**TRAIN, "\\notamacro x": "arxiv-display"}
    coverage = [f for f, s in train if s == "coverage"]
    assert len(coverage) == selected["summary"]["coverage_formulas"] > len(TRAIN)
    assert "\\alpha" in coverage and "\\pi" in coverage  # symbols of the training formulas, alone
    # Without the exclusion, coverage would add the test formula "x ^ { 0 }"; it must have been left out.
    unfiltered = coverage_formulas([f for f, s in train if s != "coverage"], per_token=5, seed=0)
    assert "x ^ { 0 }" in unfiltered and "x ^ { 0 }" not in coverage
    assert not {squash(f) for f, _ in train} & BENCHMARK
    assert not {squash(f) for f in coverage} & {squash(f) for f in TRAIN}
    validation, style, image_format = selected["validation"]
    assert validation == [(f, "im2latex-100k") for f in LISTS["im2latex-100k/validation.txt"]]
    assert (style, image_format) == ("deng", "png")
    assert selected["summary"]["train"]["images"] == len(train)


def test_max_eval_caps_the_benchmark_splits(tmp_path, monkeypatch):
    selected = select(tmp_path, monkeypatch, "--max-eval", "1", "--coverage", "0")
    assert selected["validation"][0] == [("\\frac { a } { b }", "im2latex-100k")]
    assert selected["test"][0] == [("a + b = c", "im2latex-100k")]
    # the benchmark formulas left out of the built splits stay out of train too
    selected = select(tmp_path, monkeypatch, "--max-eval", "1", "--max-train", "20")  # the default --coverage
    assert not {squash(f) for f, _ in selected["train"][0]} & BENCHMARK


def test_exclude_keeps_a_held_out_set_out_of_train(tmp_path, monkeypatch):
    held_out = tmp_path / "held-out" / "data"
    held_out.mkdir(parents=True)
    # a generalisation set's formulas, in another spacing than the lists': compared without whitespace
    table = pa.table({"formula": ["\\sqrt {x}", "n!"], "source": ["arxiv-display", "books-inline"]})
    pq.write_table(table, held_out / "test-00000-of-00001.parquet")
    selected = select(tmp_path, monkeypatch, "--max-train", "20", "--coverage", "0", "--train-style", "wide")
    train, style, _ = selected["train"]
    assert style == "wide" and {f for f, _ in train} == {*TRAIN, "\\notamacro x"}
    selected = select(tmp_path, monkeypatch, "--max-train", "20", "--coverage", "0", "--exclude", str(held_out.parent))
    assert {f for f, _ in selected["train"][0]} == {*TRAIN, "\\notamacro x"} - {"\\sqrt { x }", "n !"}
    skipped = selected["summary"]["train_lines_skipped"]  # counted apart from the benchmark formulas
    assert (skipped["excluded formula removed"], skipped["benchmark formula removed"]) == (2, 1)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        select(tmp_path, monkeypatch, "--exclude", str(tmp_path / "nowhere"))


def test_formulas_only_writes_train_unrendered_for_a_generalisation_set_to_exclude(tmp_path, monkeypatch):
    options = ("--max-train", "20", "--coverage", "2", "--spacing", "0.5")
    train = select(tmp_path, monkeypatch, *options)["train"][0]
    monkeypatch.setattr(prepare, "write_split", lambda *args, **kwargs: pytest.fail("--formulas-only rendered"))
    output = tmp_path / "selection"
    prepare.main(["--formulas", str(tmp_path / "formulas"), "--output", str(output), *options, "--formulas-only"])
    assert [path.name for path in (output / "data").iterdir()] == ["train-formulas.parquet"]
    table = pq.read_table(output / "data" / "train-formulas.parquet")
    assert list(zip(table["formula"].to_pylist(), table["source"].to_pylist(), strict=True)) == train
    assert "coverage" in table["source"].to_pylist()
    # what `data.generalization --dataset` excludes: the same keys as the rendered build's rows would give
    assert prepare.dataset_formulas(output) == {overlap_key(formula) for formula, _ in train}


@pytest.mark.parametrize("style", ["scattered", "typed"])
def test_spacing_gives_train_hand_spacing_and_leaves_the_benchmark_alone(tmp_path, monkeypatch, style):
    options = ["--max-train", "20", "--coverage", "0", "--spacing", "1", "--spacing-style", style]
    selected = select(tmp_path, monkeypatch, *options)
    assert selected["summary"]["spacing_style"] == style
    train = [formula for formula, _ in selected["train"][0]]
    spaced = [formula for formula in train if has_hand_spacing(formula)]
    # every formula with a gap got spacing commands; without them, train is what it would have been
    no_gap = {"\\sqrt { x }", "\\alpha _ { i }", "\\sqrt { 2 }", "\\beta"}  # nothing between two atoms
    assert len(spaced) == selected["summary"]["spacing_formulas"] == len(TRAIN) + 1 - len(no_gap)
    assert no_gap <= set(train)
    assert sorted(" ".join(without_spacing(f)) for f in train) == sorted({*TRAIN, "\\notamacro x"})
    assert selected["validation"][0] == [(f, "im2latex-100k") for f in LISTS["im2latex-100k/validation.txt"]]
    assert "spacing_formulas" not in select(tmp_path, monkeypatch, "--max-train", "20", "--coverage", "0")["summary"]


def test_spacing_font_cm_renders_the_spaced_formulas_in_computer_modern(tmp_path, monkeypatch):
    options = ["--max-train", "20", "--coverage", "0", "--train-style", "wide", "--spacing", "0.5"]
    selected = select(tmp_path, monkeypatch, *options, "--spacing-font", "cm")
    rows, style, _ = selected["train"]
    formulas = [formula for formula, _ in rows]
    assert selected["summary"]["spacing_font"] == "cm"
    spaced = [f for f in formulas if has_hand_spacing(f)]
    plain = [f for f in formulas if f not in spaced]
    assert spaced and plain
    for index, formula in enumerate(formulas):
        drawn = wide_style(index, formula)
        expected = replace(drawn, font="") if formula in spaced else drawn
        assert style(index, formula) == expected
    assert any(wide_style(index, formula).font for index, formula in enumerate(plain))  # not all CM anyway
    # by default the spaced formulas are drawn like the rest
    assert select(tmp_path, monkeypatch, *options)["train"][1] == "wide"


def test_spacing_never_makes_a_held_out_formula(monkeypatch):
    monkeypatch.setitem(prepare.SPACING_STYLES, "scattered", lambda formula, rng: "a \\, + b")
    train = [("a + b", "arxiv-display"), ("c + d", "arxiv-display")]
    assert prepare.with_spacing(train, 1.0, 0, {squash("a \\, + b")}) == (train, 0)
    assert prepare.with_spacing(train, 0.0, 0, set()) == (train, 0)


@pytest.mark.parametrize("fraction", ["-0.1", "1.5"])
def test_spacing_fraction_out_of_range_is_a_usage_error(tmp_path, capsys, fraction):
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["--formulas", str(tmp_path), "--output", str(tmp_path / "out"), "--spacing", fraction])
    assert exit_info.value.code == 2
    assert f"--spacing must be a fraction in [0, 1], got {float(fraction)}" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--spacing-style", "typed"], ["--spacing-font", "cm"]])
def test_spacing_options_without_spacing_are_a_usage_error(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["--formulas", str(tmp_path), "--output", str(tmp_path / "out"), *option])
    assert exit_info.value.code == 2
    assert "give --spacing F" in capsys.readouterr().err


def test_squash():
    assert squash("a  +\tb\n= c") == "a+b=c"
    assert squash("\\frac { 1 } { 2 }") == squash("\\frac{1}{2}") == "\\frac{1}{2}"
    assert squash("x ^ { 2 }") != squash("x ^ { 3 }")
    assert squash("   ") == ""


@pytest.mark.parametrize("leak", ["a + b = c", "a+b  =c"])
def test_leak_check_stops_the_build(tmp_path, monkeypatch, leak):
    """Were the filtering in `training_formulas` lost, the build would fail before rendering anything."""
    formulas = write_lists(tmp_path / "formulas")
    chosen = [("n !", "books-inline"), (leak, "arxiv-display")]
    monkeypatch.setattr(prepare, "training_formulas", lambda *args: (chosen, Counter()))
    with pytest.raises(RuntimeError, match="1 benchmark or excluded formulas in train, e.g. " + re.escape(repr(leak))):
        prepare.main(["--formulas", str(formulas), "--output", str(tmp_path / "out"), "--coverage", "0"])
    assert not (tmp_path / "out").exists()


def test_missing_source_list_is_a_clear_error(tmp_path):
    formulas = write_lists(tmp_path / "formulas")
    shutil.rmtree(formulas / "qa")
    with pytest.raises(FileNotFoundError, match=r"qa/\*_display\.txt"):
        prepare.main(["--formulas", str(formulas), "--output", str(tmp_path / "out"), "--workers", "1"])


def test_missing_formula_folder_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["--formulas", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "nowhere does not exist" in capsys.readouterr().err


def test_overlap_key_sees_through_the_form():
    """A benchmark line, a raw formula and one in an older canonical form (unbraced script) are the same formula."""
    key = overlap_key
    assert key("E = m c ^ { 2 }") == key("E=mc^2") == key("E = m c ^ 2") == key("E = m c ^ {2}")
    assert key("x ^ { \\prime }") == key("x'")
    assert key("\\frac {") == "\\frac{"  # not normalisable: compared as written


def test_a_font_that_renders_nothing_is_reported(tmp_path, caplog):
    """A missing font package fails every formula set in it: the split must say so, not just come out thinner."""
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed")
    pairs = [(formula, "arxiv-display") for formula in ("a + b", "x ^ { 2 }", "\\alpha", "y = 1")]
    style = lambda index, formula: RenderStyle(font="nosuchfontpackage" if index % 2 else "")  # noqa: E731

    report = prepare.write_split(pairs, style, tmp_path / "data", "train", 1, 10)

    assert report["images"] == 2
    assert report["fonts"] == {"cm": {"images": 2, "skipped": 0}, "nosuchfontpackage": {"images": 0, "skipped": 2}}
    assert list(report["fonts_without_images"]) == ["nosuchfontpackage"]
    assert "nosuchfontpackage" in report["fonts_without_images"]["nosuchfontpackage"]  # TeX's missing-file error
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert len(errors) == 1 and "'nosuchfontpackage' wrote none of its 2 images" in errors[0]
