"""Tests for modeling.compact: each rule and its traps, idempotence, and the render-identical guarantee."""

import ast
import shutil
from pathlib import Path

import pytest

from modeling.compact import _SCRIPT_SYMBOLS, compact_or_tokens, to_compact

CASES = [
    # math-mode spaces go; digits and letters join
    ("1 2 3 . 4 5", "123.45"),
    ("x + y = z", "x+y=z"),
    ("\\mathrm { m a x }", "\\mathrm{max}"),
    ("\\frac { a } { b }", "\\frac{a}{b}"),
    ("\\sqrt [ 3 ] { x }", "\\sqrt[3]{x}"),
    ("{ \\frac { 1 } { 2 } }", "{\\frac{1}{2}}"),
    ("\\hspace { 1 c m } x", "\\hspace{1cm}x"),
    # a control word keeps its space before a letter or digit, not before anything else
    ("\\alpha x", "\\alpha x"),
    ("\\alpha \\beta", "\\alpha\\beta"),
    ("\\alpha 2", "\\alpha 2"),
    ("\\alpha ( x )", "\\alpha(x)"),
    ("{ \\bf M } x", "{\\bf M}x"),
    ("\\cal C", "\\cal C"),
    ("\\not =", "\\not="),
    # spacing commands, control space
    ("a \\, b \\; c \\! d \\quad e \\qquad f", "a\\,b\\;c\\!d\\quad e\\qquad f"),
    ("a \\ b", "a\\ b"),
    ("a ~ b", "a~b"),
    ("x \\", "x\\ "),
    # \left / \right with their delimiters
    ("\\left( x \\right)", "\\left(x\\right)"),
    ("\\left\\langle a \\right\\rangle b", "\\left\\langle a\\right\\rangle b"),
    ("\\left. x \\right\\}", "\\left.x\\right\\}"),
    # text mode: the spelled-out words are joined (~ is the real space); a space ends a control word
    ("\\textrm { a n d } x", "\\textrm{and}x"),
    ("\\text { a b }", "\\text{ab}"),
    ("\\mbox { i f ~ x } y", "\\mbox{if~x}y"),
    ("\\textrm { f o r \\emph { u n } }", "\\textrm{for\\emph{un}}"),
    ("\\mbox { \\bf a b } c", "\\mbox{\\bf ab}c"),
    ("\\textrm { $ \\alpha x $ }", "\\textrm{$\\alpha x$}"),
    ("\\raisebox { 0 e x } [ 1 e x ] { a b } c", "\\raisebox{0ex}[1ex]{ab}c"),
    ("\\d C = 1", "\\d C=1"),
    ("\\begin{tabular} { c } { a b } \\\\ \\end{tabular}", "\\begin{tabular} { c } { a b } \\\\ \\end{tabular}"),
    ("\\vrule h e i g h t 1 e m x", "\\vrule h e i g h t 1 e m x"),
    # operators: only where amsmath defines exactly that \operatorname
    ("\\operatorname { s i n } x", "\\sin x"),
    ("\\operatorname { e x p } ( x )", "\\exp(x)"),
    ("\\operatorname { a r c t a n } ^ { 2 }", "\\arctan^2"),
    ("\\operatorname* { l i m } _ { n }", "\\lim_n"),
    ("\\operatorname* { m a x } _ { x }", "\\max_x"),
    ("\\operatorname* { l i m \\, s u p } _ { n }", "\\limsup_n"),
    ("\\operatorname { l i m } x", "\\operatorname{lim}x"),
    ("\\operatorname* { s i n } x", "\\operatorname*{sin}x"),
    ("\\operatorname { T r } x", "\\operatorname{Tr}x"),
    ("\\mathrm { s i n } x", "\\mathrm{sin}x"),
    # scripts: braces around one safe token go, the rest stay
    ("x ^ { 2 }", "x^2"),
    ("x ^ { 1 2 }", "x^{12}"),
    ("x _ { i } ^ { 2 }", "x_i^2"),
    ("x ^ { \\alpha }", "x^\\alpha"),
    ("f ^ { \\prime } ( x )", "f^\\prime(x)"),
    ("f ^ { \\prime \\prime }", "f^{\\prime\\prime}"),
    ("f ' ' ( x )", "f''(x)"),
    ("x ^ { - }", "x^-"),
    ("x ^ { \\cdots }", "x^{\\cdots}"),
    ("x ^ { \\neq }", "x^{\\neq}"),
    ("x ^ { \\operatorname { s i n } }", "x^{\\sin}"),
    ("x ^ { 2 } y ^ { 2 }", "x^2 y^2"),
    ("x ^ { 2 } 3", "x^2 3"),
    ("e ^ { \\alpha } x", "e^\\alpha x"),
    ("x ^ { 2 } +", "x^2+"),
    ("\\int _ { 0 } ^ { \\infty } d x", "\\int_0^\\infty dx"),
    # arrays: cells keep their braces; a space before [ or * after \\ or \begin is meaningful in amsmath
    (
        "\\begin{array} { c c } { a } & { b } \\\\ { c } & { d } \\\\ \\end{array}",
        "\\begin{array}{cc}{a} & {b}\\\\ {c} & {d}\\\\ \\end{array}",
    ),
    (
        "\\begin{aligned} { a } \\\\ [ 2 m m ] { b } \\\\ \\end{aligned}",
        "\\begin{aligned}{a}\\\\ [2mm]{b}\\\\ \\end{aligned}",
    ),
    ("\\begin{aligned}{a}\\\\[2mm]{b}\\end{aligned}", "\\begin{aligned}{a}\\\\[2mm]{b}\\end{aligned}"),
    ("\\begin{aligned} [ t ] x \\end{aligned}", "\\begin{aligned} [t]x\\end{aligned}"),
    ("", ""),
]


@pytest.mark.parametrize(("tokens", "compact"), CASES)
def test_rules(tokens: str, compact: str) -> None:
    assert to_compact(tokens) == compact


@pytest.mark.parametrize(("tokens", "compact"), CASES)
def test_idempotent_on_rule_cases(tokens: str, compact: str) -> None:
    assert to_compact(compact) == compact


def test_idempotent_and_shorter_on_real_formulas(formulas_dir: Path) -> None:
    lines = _first_lines(formulas_dir, 2000)
    for line in lines:
        compact = to_compact(line)
        assert to_compact(compact) == compact, line
        assert len(compact) <= len(line), line


@pytest.mark.parametrize("bad", ["\\frac { a } { b", "x } + { y", "{ { }", "\\begin{tabular} { c } a"])
def test_unbalanced_input_raises_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="formula"):
        to_compact(bad)


def test_module_is_pure() -> None:
    """The server imports it: no data/, no TeX, no subprocess; only the standard library's re."""
    source = Path(__file__).resolve().parents[1] / "modeling" / "compact.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "re"}, imported


def _first_lines(formulas_dir: Path, count: int) -> list[str]:
    with open(formulas_dir / "im2latex-100k" / "validation.txt", encoding="utf-8") as handle:
        return [line.strip() for _, line in zip(range(count), handle, strict=False) if line.strip()]


def _render_pairs(token_forms: list[str]) -> tuple[int, list[tuple[str, str]]]:
    """Render each token form and its compact form; return how many token forms rendered and the mismatches."""
    pytest.importorskip("pymupdf", reason="pymupdf not installed (pip install -r requirements-data.txt)")
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed")
    import numpy as np

    from data.render import render

    compact = [to_compact(t) for t in token_forms]
    results = render(token_forms + compact, style="deng", workers=1, progress=False)
    rendered, mismatches = 0, []
    for k, (token_form, short) in enumerate(zip(token_forms, compact, strict=True)):
        reference, candidate = results[k].image, results[len(token_forms) + k].image
        if reference is None:  # the token form itself does not compile: nothing to compare
            continue
        rendered += 1
        a = np.asarray(reference)
        b = None if candidate is None else np.asarray(candidate)
        if b is None or a.shape != b.shape or not (a == b).all():
            mismatches.append((token_form, short))
    return rendered, mismatches


def test_compact_renders_pixel_identical_on_real_formulas(formulas_dir: Path) -> None:
    lines = _first_lines(formulas_dir, 300)
    rendered, mismatches = _render_pairs(lines)
    assert rendered >= 290, rendered  # 298 of the first 300 lines compile
    assert mismatches == []
    shortening = sum(len(to_compact(line)) for line in lines) / sum(map(len, lines))
    assert shortening < 0.65, shortening  # compact is about 58% of the token form's length


def test_compact_renders_pixel_identical_on_traps() -> None:
    symbols = [f"x ^ {{ {s} }} + y _ {{ {s} }}" for s in sorted(_SCRIPT_SYMBOLS)]
    chars = [f"x ^ {{ {c} }} y" for c in "aZ09+-*"]
    traps = [t for t, _ in CASES if t and not t.endswith("\\")] + symbols + chars
    rendered, mismatches = _render_pairs(traps)
    assert rendered >= len(traps) - 5, rendered  # a few trap lines (\textrm in \emph ...) may not compile
    assert mismatches == []


def test_compact_or_tokens_falls_back_on_an_unfinished_reading() -> None:
    assert compact_or_tokens("x ^ { 2 }") == "x^2"
    assert compact_or_tokens("\\frac { a } {") == "\\frac { a } {"  # unbalanced: the token form, no error
