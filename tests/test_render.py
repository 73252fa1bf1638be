"""Tests for data.render: batches, failure isolation, the two security walls, styles, the imagefolder CLI."""

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

pytest.importorskip("pymupdf", reason="pymupdf not installed (pip install -r requirements-data.txt)")

import numpy as np

from data.render import (
    DENG,
    VARIED_FONTS,
    WIDE_FONTS,
    RenderStyle,
    _render_batch,
    check_formula,
    main,
    render,
    varied_style,
    wide_style,
)

pytestmark = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")

GOOD = ["x ^ { 2 } + y ^ { 2 } = z ^ { 2 }", "\\frac { a } { b }", "\\sum _ { i = 1 } ^ { n } i"]


def test_renders_tight_deng_images() -> None:
    results = render(GOOD, "deng", workers=1, progress=False)
    assert [r.index for r in results] == [0, 1, 2]
    for result in results:
        assert result.error is None and result.image is not None
        assert result.image.mode == "L"
        assert 30 <= result.image.height <= 200, result.image.size
        assert result.image.getpixel((0, 0)) == 255  # white margin around the ink
        assert result.style == DENG


def test_broken_formula_is_skipped_and_the_batch_survives() -> None:
    formulas = [GOOD[0], "\\frac { 1 } { \\undefinedcs }", GOOD[1], "{ x", GOOD[2], "\\hspace { 1 c m } x"]
    results = render(formulas, "deng", workers=1, progress=False)
    assert [r.image is not None for r in results] == [True, False, True, False, True, True]
    assert "Undefined control sequence" in results[1].error
    assert not results[1].refused


def test_a_formula_that_hangs_tex_is_cut_off_by_the_timeout() -> None:
    hang = "\\begin{array} { c } { R } \\\\[ \\alpha , \\ldots ] { a } \\\\ \\end{array}"  # loops in calc
    results = render([GOOD[0], hang, GOOD[1]], "deng", workers=1, timeout=2, progress=False)
    assert [r.image is not None for r in results] == [True, False, True]


def test_a_bracket_after_a_row_end_and_a_space_is_content() -> None:
    """amsmath reads ``\\\\ [ a ]`` as content, LaTeX's array as a (looping) optional skip; both render it now."""
    array = "\\begin{array} { c } { R } \\\\ [ \\alpha , \\ldots ] { a } \\\\ \\end{array}"
    matrix = "\\begin{matrix} { R } \\\\ [ \\alpha , \\ldots ] { a } \\\\ \\end{matrix}"
    skip = "\\begin{array} { c } a \\\\ [ 1 c m ] b \\end{array}"
    no_skip = "\\begin{array} { c } a \\\\ b \\end{array}"
    results = render([array, matrix, skip, no_skip], "deng", workers=1, timeout=5, progress=False)
    assert [r.error for r in results] == [None] * 4
    assert results[2].image.height > results[3].image.height + 30  # the 1cm skip is still a skip


@pytest.mark.parametrize(
    "hostile",
    [
        "\\input{/etc/passwd}",
        "\\openin 1 = /etc/passwd",
        "\\immediate\\write18{touch /tmp/x}",
        "\\csname input\\endcsname{/etc/passwd}",
        "^^5cinput{/etc/passwd}",
        "\\def\\x{y}",
        "\\catcode`\\@=11",
        "x \\end{document}",
        "\\end",
        "x" * 5000,
        "  ",
    ],
)
def test_hostile_formulas_are_refused_before_tex(hostile: str) -> None:
    assert check_formula(hostile) is not None
    (result,) = render([hostile], workers=1, progress=False)
    assert result.refused and result.image is None and result.error


def test_check_formula_allows_ordinary_math() -> None:
    for formula in [*GOOD, "\\left( \\begin{array} { c } { 0 } \\\\ \\end{array} \\right)", "\\deg \\letter"]:
        assert check_formula(formula) is None, formula


def test_sandbox_holds_without_the_prefilter(tmp_path: Path) -> None:
    """The paranoid pdflatex environment alone stops reads and writes outside the run directory."""
    secret = tmp_path / "secret.tex"
    secret.write_text("\\rule{5cm}{5cm}\n")  # would make a huge black square if it were ever read
    outside = tmp_path / "pwned.tex"
    relative_name = f"pwned-{uuid.uuid4().hex}.tex"
    hostile = [
        f"x \\input{{{secret}}}",
        f"x \\csname input\\endcsname{{{secret}}}",
        f"x ^^5cinput{{{secret}}}",
        f"x \\immediate\\openin1={secret} \\read1 to \\y \\y",
        f"x \\immediate\\openout5={outside} \\immediate\\write5{{a}}\\immediate\\closeout5",
        f"x \\immediate\\openout6=../{relative_name} \\immediate\\write6{{a}}\\immediate\\closeout6",
        f"x \\immediate\\write18{{touch {outside}}}",
    ]
    items = [(k, formula, DENG) for k, formula in enumerate([*hostile, GOOD[0]])]
    results = _render_batch(items, timeout=60)
    assert len(results) == len(items)
    for result in results:
        if result.image is not None:  # a 5 cm square at 200 dpi would be about 390 px wide
            assert result.image.width < 300 and result.image.height < 150, (result.index, result.image.size)
    assert next(r for r in results if r.index == len(hostile)).image is not None
    assert not outside.exists()
    assert not (Path(tempfile.gettempdir()) / relative_name).exists()


def test_varied_style_is_deterministic_and_every_font_compiles() -> None:
    assert varied_style(7, "x") == varied_style(7, "x")
    assert len({varied_style(i, "x").font for i in range(100)}) == len(VARIED_FONTS)
    fonts = [RenderStyle(font=font, font_size=10, display=False, dpi=120) for font in VARIED_FONTS]
    results = render([GOOD[1]] * len(fonts), lambda i, f: fonts[i], workers=1, progress=False)
    assert all(r.image is not None for r in results), [r.error for r in results]
    assert [r.style.font for r in results] == list(VARIED_FONTS)


def _wide_fonts_installed() -> bool:
    files = ["iwona.sty", "newtxmath.sty", "xstring.sty", "binhex.tex", "lm-mathit.enc"]  # fonts-extra, latex-extra,
    # plain-generic, and lmodern (MLModern needs its encodings; texlive-base only recommends it)
    found = subprocess.run(["kpsewhich", *files], capture_output=True, text=True).stdout.split()
    return len(found) == len(files)


@pytest.mark.skipif(
    shutil.which("kpsewhich") is None or not _wide_fonts_installed(),
    reason="needs texlive-fonts-extra texlive-latex-extra texlive-plain-generic lmodern",
)
def test_wide_style_fonts_compile_and_change_the_math() -> None:
    assert set(VARIED_FONTS) < set(WIDE_FONTS) and len(set(WIDE_FONTS)) == len(WIDE_FONTS)
    assert wide_style(7, "x") == wide_style(7, "x")
    assert len({wide_style(i, "x").font for i in range(400)}) == len(WIDE_FONTS)
    # every alphabet and construction the preamble promises, in every font
    formula = (
        r"\mathbb { R } ^ { n } \ni \bm { x } = \mathcal { L } \mathscr { A } \sqrt { \alpha } + \frac { 1 } { 2 }"
    )
    fonts = [RenderStyle(font=font, font_size=10, display=False, dpi=120) for font in WIDE_FONTS]
    results = render([formula] * len(fonts), lambda i, f: fonts[i], workers=2, progress=False)
    assert all(r.image is not None for r in results), [(r.style.font, r.error) for r in results if r.error]
    looks = {}  # each font really changes how the formula looks: no two images are the same
    for result in results:
        image = np.asarray(result.image)
        looks.setdefault((image.shape, image.tobytes()), []).append(result.style.font)
    assert len(looks) == len(WIDE_FONTS), [fonts for fonts in looks.values() if len(fonts) > 1]


def test_render_style_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="13"):
        RenderStyle(font_size=13)
    with pytest.raises(ValueError, match="evil"):
        RenderStyle(font="evil}\\input")


def test_cli_writes_an_imagefolder_dataset(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    formulas = tmp_path / "formulas.txt"
    formulas.write_text("\n".join([GOOD[0], "", "\\input{/etc/passwd}", "\\frac { 1 } { \\nope }", GOOD[1]]) + "\n")
    output = tmp_path / "out"
    main([str(formulas), "--output", str(output), "--style", "varied", "--workers", "2"])
    assert sorted(p.name for p in (output / "images").iterdir()) == ["0000001.png", "0000005.png"]
    dataset = datasets.load_dataset("imagefolder", data_dir=str(output), split="train")
    assert sorted(dataset["formula"]) == sorted([GOOD[0], GOOD[1]])
    assert dataset[0]["image"].size[0] > 0
    assert (output / "styles.csv").read_text().count("\n") == 3


def test_token_form_text_is_typeset_as_words() -> None:
    """``\\textrm { a n d }`` (im2latex-100k's spelling of ``\\textrm{and}``) must not come out letter-spaced;
    raw LaTeX keeps its text spaces."""
    token_form, raw, spaced = render(
        ["x \\textrm { a n d ~ s o } y", "x \\textrm{and so} y", "x \\textrm{a n d s o} y"],
        workers=1,
        progress=False,
    )
    assert token_form.image.tobytes() == raw.image.tobytes()
    assert spaced.image.width > raw.image.width + 10


def test_skip_reasons_name_why_there_is_no_image() -> None:
    formulas = ["", "x" * 5000, "\\input{/etc/passwd}", "\\nosuchmacro", "\\Large", "x"]
    reasons = [r.skip_reason for r in render(formulas, "deng", workers=1, progress=False)]
    assert reasons == ["empty", "too long", "forbidden", "TeX error", "renders no ink", None]
