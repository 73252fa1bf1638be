"""Render LaTeX formulas to tight grayscale images: many formulas per pdflatex run, rasterised with PyMuPDF.

Each batch is one LaTeX document in which every formula is one ``preview`` page (``\\usepackage[active,
tightpage]{preview}``), one formula per source line, so a TeX error's ``l.N`` names the formula that caused it.
A failing formula is reported and skipped: the rest of its batch is rendered again without it (and the
flagged formulas once more on their own, so that a cascade of errors cannot sink a good formula); a run that
fails without naming a line (timeout, no PDF, page count mismatch) is bisected.

Security, two walls. (1) :func:`check_formula` refuses, before TeX runs, formulas with file, shell, catcode or
definition primitives (``\\input``, ``\\openin``, ``\\write``, ``\\csname``, ``\\catcode``, ``\\def``, ``^^``
escapes, ``\\end{document}`` ...). (2) pdflatex runs with ``-no-shell-escape``, ``openin_any=p``,
``openout_any=p`` (no absolute paths, no ``..``, no dotfiles), ``TEXMFOUTPUT`` set to a fresh temporary
directory that is also its working directory, ``-interaction=nonstopmode`` and a timeout.

Formulas may be raw LaTeX or canonical tokens (:mod:`data.normalize`): before TeX sees them, spelled-out
dimensions are joined (``1 c m`` -> ``1cm``) and spaces after a prime dropped (``f ' '`` -> ``f''``), both
invisible in math mode. In a formula written in the canonical form, the spelled-out words of text-mode arguments
are joined (``\\textrm { i f ~ x }`` -> ``\\textrm {if~x}``, :func:`modeling.compact.spell_text_mode`), as
im2latex-100k's images show them; raw LaTeX keeps its text spaces. Every preamble loads amsmath, amssymb (not
with txfonts/pxfonts, which define the symbols), mathtools, bm and mathrsfs, and defines the KaTeX macros
``\\lt``, ``\\gt``, ``\\bra``, ``\\ket``, ``\\braket``, ``\\colonequals`` that the raw lists use; none of
this changes how other formulas look.

Styles: ``deng`` is the look of Deng et al.'s im2latex-100k benchmark (12pt article, ``displaymath``, original
``cmex10`` delimiter sizes, 200 dpi); ``varied`` picks, deterministically from the index and formula, a font
package, size, display or inline, and resolution for training variety; ``wide`` picks the same way from 18 more
fonts (``WIDE_FONTS``; needs ``texlive-fonts-extra texlive-latex-extra texlive-plain-generic lmodern``).

CLI: ``python -m data.render FORMULAS.txt --output DIR [--style deng|varied|wide] [--workers N]`` writes
``DIR/images/NNNNNNN.png`` (N = line number), ``DIR/metadata.csv`` (``file_name,formula``, readable by
``datasets.load_dataset("imagefolder", data_dir=DIR)``) and ``DIR/styles.csv`` (the options each image got).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import multiprocessing
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pymupdf
from PIL import Image
from tqdm import tqdm

from data.normalize import is_canonical

__all__ = ["RenderStyle", "RenderResult", "DENG", "varied_style", "wide_style", "check_formula", "render", "main"]

logger = logging.getLogger(__name__)

MAX_LENGTH = 4000
VARIED_FONTS = ("", "mathpazo", "txfonts", "mathptmx", "pxfonts")
# The ``wide`` style adds math fonts from texlive-fonts-extra (with texlive-latex-extra, texlive-plain-generic and
# lmodern, whose encodings MLModern reads), among them sans-serif ones. Left out on purpose: the generalisation set's
# fonts (Charter, Utopia, Bookman, sansmath's CM sans-serif math) and their near relatives, `HELD_OUT_RELATIVES`.
HELD_OUT_RELATIVES = ("XCharter", "fourier", "erewhon", "cmbright", "sansmathfonts", "sansmath")
WIDE_FONTS = VARIED_FONTS + (
    "anttor", "baskervillef", "cochineal", "ebgaramond", "eulervm", "firamath", "gentium", "iwona", "kpfonts",
    "kurier", "libertinus", "lxfonts", "mathpple", "mlmodern", "newtx", "notomath", "step", "stickstoo",
)  # fmt: skip
# Fonts that need more than ``\usepackage{font}``; the others are package names.
_FONT_PACKAGES = {
    "anttor": "\\usepackage[math]{anttor}",
    "baskervillef": "\\usepackage{baskervillef}\\usepackage[baskervillef,vvarbb]{newtxmath}",
    "cochineal": "\\usepackage{cochineal}\\usepackage[cochineal]{newtxmath}",
    "ebgaramond": "\\usepackage{ebgaramond}\\usepackage[ebgaramond]{newtxmath}",
    "firamath": "\\usepackage[sfdefault]{FiraSans}\\usepackage{newtxsf}\\DeclareMathAlphabet{\\mathbb}{U}{msb}{m}{n}",
    "gentium": "\\usepackage{gentium}\\usepackage{newtxmath}",
    "iwona": "\\usepackage[math]{iwona}",
    "kurier": "\\usepackage[math]{kurier}",
    "libertinus": "\\usepackage{libertinus}\\usepackage{libertinust1math}",
    "newtx": "\\usepackage{newtxtext,newtxmath}",
    "step": "\\usepackage{step}\\usepackage[stix2]{newtxmath}",
    "stickstoo": "\\usepackage{stickstootext}\\usepackage[stickstoo]{newtxmath}",
}
VARIED_SIZES = (10, 11, 12)
VARIED_DPI = (120, 160, 200, 240)
INK_THRESHOLD = 250  # a pixel darker than this (0-255) counts as ink when cropping

_FORBIDDEN = re.compile(
    r"\\(?:input|include|includeonly|includegraphics|openin|openout|closein|closeout|read|readline|write"
    r"|message|immediate|csname|endcsname|catcode|[egx]?def|let|futurelet|newcommand|renewcommand"
    r"|providecommand|newenvironment|renewenvironment|DeclareRobustCommand|usepackage|RequirePackage"
    r"|documentclass|special|loop|endinput|scantokens|every[a-z]+|output|shipout|dump|batchmode"
    r"|errorstopmode|scrollmode|nonstopmode|pdf[a-zA-Z]*|directlua|jobname|makeatletter|expandafter"
    r"|afterassignment|aftergroup|uppercase|lowercase|detokenize|verb|url|lccode|uccode|mathcode|delcode"
    r"|sfcode|font|tracing[a-z]+|show[a-z]*|stop|bye|globaldefs|newread|newwrite)(?![a-zA-Z])"
    r"|\\end(?![a-zA-Z])(?!\s*\{)|\\(?:begin|end)\s*\{\s*(?:document|filecontents\*?)\s*\}|\^\^"
)
_MATH_VERSIONS = {
    "normal": "",
    "bold": "\\AtBeginDocument{\\boldmath}",
    "sans": "\\usepackage{sansmath}\\AtBeginDocument{\\sansmath}",
}
_SECONDS_PER_FORMULA = 0.1  # added to the base timeout of a run, so that bisecting a hang gets cheaper
_COMMENT = re.compile(r"(?<!\\)%[^\n]*")
_ERROR_LINE = re.compile(r"^l\.(\d+) ", re.M)
_UNITS = ("pt", "cm", "mm", "in", "em", "ex", "mu", "bp", "pc", "dd", "cc", "sp")
_UNIT = "|".join(_UNITS)
_SPACED_UNIT = "|".join(f"{unit[0]}\\s*{unit[1]}" for unit in _UNITS)
# A dimension spelled out in canonical tokens ("- . 1 8 e m", "1 c m") must be joined for TeX to read it.
_SPACED_DIMENSION = re.compile(rf"(?<![\\a-zA-Z])(\d[\d\s]*(?:\.[\d\s]*)?|\.\s*\d[\d\s]*)({_SPACED_UNIT})(?![a-zA-Z])")
# TeX's prime looks at the very next token for more primes or a superscript: "f ' '" must become "f''".
_PRIME_SPACE = re.compile(r"'\s+")
# After ``\\`` and a space, amsmath's environments read ``[`` as content, but LaTeX's ``array`` takes it for the
# optional skip (and TeX loops on ``\\ [ a , b ]``, a time-out each); ``\relax`` makes it content everywhere.
# A real skip (``\\ [ 2pt ]``, joined by then) keeps its meaning.
_ROW_END_BRACKET = re.compile(rf"\\\\\s+\[(?!\s*[-+]?\s*(?:\d+\.?\d*|\.\d+)\s*(?:{_UNIT})\s*\])")


@dataclass(frozen=True)
class RenderStyle:
    """How one formula is typeset and rasterised.

    Args:
        font: font package for text and math (``""`` = Computer Modern), or a key of ``_FONT_PACKAGES``.
        font_size: document class size in pt (10, 11 or 12).
        display: ``displaymath`` if true, inline ``$...$`` otherwise.
        dpi: rasterisation resolution.
        margin: white border in pixels around the ink.
        fixed_cmex: use ``cmex10`` at every size (Deng et al.'s delimiter sizes).
        math_version: ``"normal"``, ``"bold"`` (``\\boldmath`` throughout) or ``"sans"`` (sansmath's sans-serif
            math); the training styles keep ``"normal"``, the generalisation set uses the others.
    """

    font: str = ""
    font_size: int = 12
    display: bool = True
    dpi: int = 200
    margin: int = 4
    fixed_cmex: bool = True
    math_version: str = "normal"

    def __post_init__(self) -> None:
        if self.font_size not in (10, 11, 12):
            raise ValueError(f"font_size must be 10, 11 or 12, got {self.font_size!r}")
        if not 30 <= self.dpi <= 1200:
            raise ValueError(f"dpi must be in [30, 1200], got {self.dpi!r}")
        if self.font and not re.fullmatch(r"[a-zA-Z]+", self.font):
            raise ValueError(f"font must be a package name, got {self.font!r}")
        if self.math_version not in _MATH_VERSIONS:
            raise ValueError(f"math_version must be one of {sorted(_MATH_VERSIONS)}, got {self.math_version!r}")

    def preamble(self) -> str:
        """The LaTeX preamble shared by every formula with this font and size."""
        lines = [
            f"\\documentclass[{self.font_size}pt]{{article}}",
            # txfonts and pxfonts define the AMS symbols themselves and clash with amssymb
            "\\usepackage{amsmath}" if self.font in ("txfonts", "pxfonts") else "\\usepackage{amsmath,amssymb}",
            _FONT_PACKAGES.get(self.font, f"\\usepackage{{{self.font}}}" if self.font else ""),
            "\\usepackage{mathtools,bm,mathrsfs}",
            # KaTeX macros that the raw formula lists use and LaTeX lacks
            "\\providecommand{\\lt}{<}\\providecommand{\\gt}{>}\\providecommand{\\colonequals}{\\coloneqq}",
            "\\providecommand{\\bra}[1]{\\mathinner{\\langle{#1}|}}\\providecommand{\\ket}[1]{\\mathinner{|{#1}\\rangle}}",
            "\\providecommand{\\braket}[1]{\\mathinner{\\langle{#1}\\rangle}}",
            _MATH_VERSIONS[self.math_version],
            "\\usepackage[active,tightpage]{preview}",
            "\\DeclareFontShape{OMX}{cmex}{m}{n}{<->sfixed*cmex10}{}" if self.fixed_cmex else "",
            "\\pagestyle{empty}",
            "\\begin{document}",
        ]
        return "\n".join(line for line in lines if line) + "\n"


DENG = RenderStyle()


def varied_style(index: int, formula: str, fonts: Sequence[str] = VARIED_FONTS) -> RenderStyle:
    """A training-variety style chosen deterministically from the formula's index and text."""
    digest = hashlib.sha256(f"{index}\0{formula}".encode()).digest()
    return RenderStyle(
        font=fonts[digest[0] % len(fonts)],
        font_size=VARIED_SIZES[digest[1] % len(VARIED_SIZES)],
        display=digest[2] % 2 == 0,
        dpi=VARIED_DPI[digest[3] % len(VARIED_DPI)],
        fixed_cmex=False,
    )


def wide_style(index: int, formula: str) -> RenderStyle:
    """``varied_style`` over ``WIDE_FONTS``: the training fonts and 18 more (needs texlive-fonts-extra)."""
    return varied_style(index, formula, WIDE_FONTS)


STYLES: dict[str, Callable[[int, str], RenderStyle]] = {
    "deng": lambda i, f: DENG,
    "varied": varied_style,
    "wide": wide_style,
}


@dataclass
class RenderResult:
    """The outcome for one formula: an image, or an error (``refused`` if it never reached TeX)."""

    index: int
    image: Image.Image | None
    error: str | None
    style: RenderStyle
    refused: bool = False

    @property
    def skip_reason(self) -> str | None:
        """A short name for why there is no image (from this module's messages), None when there is one."""
        if self.image is not None:
            return None
        for reason in ("empty", "too long", "forbidden", "renders no ink", "timed out"):
            if reason in (self.error or ""):
                return reason
        return "TeX error"


def check_formula(formula: str) -> str | None:
    """Return why ``formula`` must not reach TeX (``None`` if it may): empty, too long, or a forbidden primitive."""
    if not formula.strip():
        return "empty formula"
    if len(formula) > MAX_LENGTH:
        return f"too long ({len(formula)} > {MAX_LENGTH} characters)"
    match = _FORBIDDEN.search(formula)
    if match:
        return f"forbidden TeX primitive {match.group(0)!r}"
    return None


def _tex_env(workdir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(openin_any="p", openout_any="p", TEXMFOUTPUT=workdir, shell_escape="f", shell_escape_commands="")
    return env


def _formula_line(formula: str, style: RenderStyle) -> str:
    body = " ".join(_COMMENT.sub("", formula).split())
    body = _SPACED_DIMENSION.sub(lambda m: "".join(m.group(0).split()), body)
    body = _PRIME_SPACE.sub("'", body)
    body = _ROW_END_BRACKET.sub(r"\\\\\\relax [", body)
    # The space before the closing delimiter keeps a trailing control space (``x \\ ``) one.
    if style.display:
        return f"\\begin{{preview}}\\begin{{displaymath}}{body} \\end{{displaymath}}\\end{{preview}}"
    return f"\\begin{{preview}}${body} $\\end{{preview}}"


def _run_pdflatex(source: str, workdir: str, timeout: float) -> tuple[Path | None, str]:
    """Compile ``source`` in ``workdir``; return the PDF path (``None`` on failure) and the log text."""
    Path(workdir, "batch.tex").write_text(source, encoding="utf-8")
    command = ["pdflatex", "-no-shell-escape", "-interaction=nonstopmode", "batch.tex"]
    timed_out = False
    with subprocess.Popen(
        command, cwd=workdir, env=_tex_env(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as process:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # An interrupt makes TeX stop with "l.N" in a flushed log, naming the formula that hangs.
            timed_out = True
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
    log_path, pdf_path = Path(workdir, "batch.log"), Path(workdir, "batch.pdf")
    log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
    if timed_out:  # the partial log may still name the formula that hangs
        return None, f"{log}\n! pdflatex timed out after {timeout:.0f} s\n"
    return (pdf_path if pdf_path.exists() else None), log


def _crop(page: pymupdf.Page, style: RenderStyle) -> Image.Image | None:
    """Rasterise one page to grayscale and crop it to the ink plus ``style.margin`` white pixels."""
    pixmap = page.get_pixmap(dpi=style.dpi, colorspace=pymupdf.csGRAY, alpha=False)
    pixels = np.frombuffer(pixmap.samples, dtype=np.uint8).reshape(pixmap.height, pixmap.stride)
    pixels = pixels[:, : pixmap.width]
    ink = pixels < INK_THRESHOLD
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return None
    tight = pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return Image.fromarray(np.pad(tight, style.margin, constant_values=255))


def _render_batch(
    items: Sequence[tuple[int, str, RenderStyle]], timeout: float, retry_flagged: bool = True
) -> list[RenderResult]:
    """Render formulas sharing one preamble in one pdflatex run, isolating the ones that fail.

    No pre-filtering happens here: callers must run :func:`check_formula` first (tests call this directly to
    show that the TeX sandbox holds on its own).
    """
    if not items:
        return []
    preamble = items[0][2].preamble()
    header_lines = preamble.count("\n")
    source = preamble + "".join(_formula_line(f, s) + "\n" for _, f, s in items) + "\\end{document}\n"
    with tempfile.TemporaryDirectory(prefix="im2latex-render-") as workdir:
        pdf_path, log = _run_pdflatex(source, workdir, timeout + _SECONDS_PER_FORMULA * len(items))
        errors = _errors_by_formula(log, header_lines, len(items))
        if pdf_path is not None and not errors and not re.search(r"^! ", log, re.M):
            with pymupdf.open(pdf_path) as pdf:
                if pdf.page_count == len(items):
                    results = []
                    for (index, _, style), page in zip(items, pdf, strict=True):
                        image = _crop(page, style)
                        results.append(RenderResult(index, image, None if image else "renders no ink", style))
                    return results
    if len(items) == 1:
        message = errors.get(0) or next(
            (line.strip() for line in log.splitlines() if line.startswith("! ")), log[-200:] or "no output"
        )
        return [RenderResult(items[0][0], None, message, items[0][2])]
    if not errors:  # no line to blame: timeout, fatal error, missing page
        half = len(items) // 2
        return _render_batch(items[:half], timeout, retry_flagged) + _render_batch(
            items[half:], timeout, retry_flagged
        )
    good = [item for k, item in enumerate(items) if k not in errors]
    if retry_flagged and "! pdflatex timed out" not in log:  # a second chance, in case of an error cascade
        bad = [item for k, item in enumerate(items) if k in errors]
        return _render_batch(good, timeout) + _render_batch(bad, timeout, retry_flagged=False)
    failed = [RenderResult(items[k][0], None, message, items[k][2]) for k, message in errors.items()]
    return failed + _render_batch(good, timeout, retry_flagged=False)


def _errors_by_formula(log: str, header_lines: int, count: int) -> dict[int, str]:
    """Map formula positions to the first TeX error reported on their source line."""
    errors: dict[int, str] = {}
    message = ""
    for line in log.splitlines():
        if line.startswith("! "):
            message = line[2:].strip()
        match = _ERROR_LINE.match(line)
        if match and message:
            position = int(match.group(1)) - header_lines - 1
            if 0 <= position < count:
                command = re.findall(r"\\[a-zA-Z]+", line)
                if message.startswith("Undefined control sequence") and command:
                    message = f"{message} {command[-1]}"
                errors.setdefault(position, message)
            message = ""
    return errors


def _render_task(task: tuple[list[tuple[int, str, RenderStyle]], float]) -> list[RenderResult]:
    return _render_batch(*task)


def render(
    formulas: Sequence[str],
    style: str | RenderStyle | Callable[[int, str], RenderStyle] = "deng",
    workers: int = 2,
    batch_size: int = 300,
    timeout: float = 10.0,
    progress: bool = True,
) -> list[RenderResult]:
    """Render formulas to cropped grayscale images.

    Args:
        formulas: LaTeX math, one formula per item (without ``$`` delimiters).
        style: ``"deng"``, ``"varied"``, one :class:`RenderStyle` for all, or a function ``(index, formula)``.
        workers: pdflatex worker processes (1 renders in this process).
        batch_size: formulas per pdflatex run.
        timeout: seconds allowed for one pdflatex run, plus 0.1 s per formula in it.
        progress: show a tqdm bar.

    Returns:
        One :class:`RenderResult` per formula, in input order.
    """
    if isinstance(style, str):
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; choose one of {sorted(STYLES)}")
        style = STYLES[style]
    choose = (lambda i, f, s=style: s) if isinstance(style, RenderStyle) else style
    if workers < 1 or batch_size < 1:
        raise ValueError(f"workers and batch_size must be >= 1, got {workers!r} and {batch_size!r}")

    # Imported here, in the parent process only: the `modeling` package loads torch, which the (spawned) TeX
    # workers must not pay for.
    from modeling.compact import spell_text_mode

    results: dict[int, RenderResult] = {}
    groups: dict[str, list[tuple[int, str, RenderStyle]]] = {}
    for index, formula in enumerate(formulas):
        formula_style = choose(index, formula)
        reason = check_formula(formula)
        if reason:
            results[index] = RenderResult(index, None, reason, formula_style, refused=True)
            continue
        if is_canonical(formula):
            try:
                formula = spell_text_mode(formula)
            except ValueError:  # unbalanced braces: TeX names the formula
                pass
        groups.setdefault(formula_style.preamble(), []).append((index, formula, formula_style))
    tasks = [(g[k : k + batch_size], timeout) for g in groups.values() for k in range(0, len(g), batch_size)]

    with tqdm(total=len(formulas), desc="render", unit="formula", disable=not progress) as bar:
        bar.update(len(results))
        if workers == 1:
            outputs = map(_render_task, tasks)
            pool = None
        else:
            pool = multiprocessing.get_context("spawn").Pool(workers)
            outputs = pool.imap_unordered(_render_task, tasks)
        try:
            for batch in outputs:
                results.update((r.index, r) for r in batch)
                bar.update(len(batch))
        finally:
            if pool is not None:
                pool.terminate()
    return [results[i] for i in range(len(formulas))]


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: render a formula list into an ``imagefolder`` dataset directory."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("formulas", type=Path, help="text file, one formula per line")
    parser.add_argument("--output", type=Path, required=True, help="dataset directory to write")
    parser.add_argument("--style", choices=sorted(STYLES), default="deng")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=300)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.formulas.is_file():
        raise FileNotFoundError(f"formula list not found: {args.formulas}")

    lines = args.formulas.read_text(encoding="utf-8").splitlines()
    numbered = [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]
    results = render([f for _, f in numbered], args.style, args.workers, args.batch_size)

    (args.output / "images").mkdir(parents=True, exist_ok=True)
    rendered = 0
    with (
        open(args.output / "metadata.csv", "w", newline="", encoding="utf-8") as meta,
        open(args.output / "styles.csv", "w", newline="", encoding="utf-8") as styles,
    ):
        meta_writer = csv.writer(meta)
        meta_writer.writerow(["file_name", "formula"])
        style_writer = csv.DictWriter(styles, fieldnames=["file_name", *asdict(DENG)])
        style_writer.writeheader()
        for (line_number, formula), result in zip(numbered, results, strict=True):
            if result.image is None:
                continue
            file_name = f"images/{line_number:07d}.png"
            result.image.save(args.output / file_name)
            meta_writer.writerow([file_name, formula])
            style_writer.writerow({"file_name": file_name, **asdict(result.style)})
            rendered += 1

    refused = [(n, r) for (n, _), r in zip(numbered, results, strict=True) if r.refused]
    too_long = [(n, r) for n, r in refused if r.error and r.error.startswith("too long")]
    refused = [(n, r) for n, r in refused if (n, r) not in too_long]
    failed = [(n, r) for (n, _), r in zip(numbered, results, strict=True) if r.image is None and not r.refused]
    logger.info("rendered %d of %d formulas into %s", rendered, len(numbered), args.output)
    logger.info("empty lines skipped: %d; too long skipped: %d", len(lines) - len(numbered), len(too_long))
    if failed:
        logger.info("failed: %d, e.g. line %d: %s", len(failed), failed[0][0], failed[0][1].error)
    for line_number, result in refused:
        logger.info("refused line %d: %s", line_number, result.error)


if __name__ == "__main__":
    main()
