"""tools/spacing_report.py on a small predictions.jsonl, run as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools import spacing_report as tool

ROOT = Path(__file__).resolve().parents[1]
RECORDS = [
    # Control space is `~` in the canonical form: this reading is exact, not one that differs in spacing.
    {"reference": "a \\ b", "prediction": "a ~ b", "look": "plain"},
    {"reference": "a \\, b", "prediction": "a \\; b", "look": "plain"},  # differs only in spacing
    # Differs only in spacing too, with a run of 5 and a run of 1.
    {"reference": "x + y", "prediction": "x \\, \\, \\quad \\, \\, + ~ y", "look": "blur"},
    {"reference": "x + y", "prediction": "x - y", "look": "blur"},
]


def spacing_report(path: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "tools/spacing_report.py"), str(path), *arguments]
    return subprocess.run(command, cwd=path.parent, capture_output=True, text=True, timeout=120)


@pytest.fixture()
def predictions(tmp_path) -> Path:
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in RECORDS))
    return path


def test_counts_spacing_written_and_in_references(predictions):
    done = spacing_report(predictions, "--group-by", "look")
    assert done.returncode == 0, done.stderr
    whole, blur, plain = done.stdout.split("\n\n")
    lines = whole.splitlines()
    assert lines[1].split() == ["~", "2", "1"] and lines[2].split() == ["\\,", "4", "1"]
    assert lines[3].split() == ["\\;", "1", "0"] and lines[6].split() == ["\\quad", "1", "0"]
    assert lines[8].split() == ["all", "8", "2"]
    assert lines[9] == "readings differing from the reference only in spacing: 2 of 4"
    assert lines[10] == "the commonest differences in them, reference -> reading (- is nothing):"
    assert [line.split() for line in lines[11:14]] == [
        ["1", "\\,", "->", "\\;"],
        ["1", "-", "->", "\\,", "\\,", "\\quad", "\\,", "\\,"],
        ["1", "-", "->", "~"],
    ]
    assert lines[14] == "readings holding a run of 5+ spacing commands: 1, holding 5 of the 8 written"
    assert blur.splitlines()[0] == "look = blur" and blur.splitlines()[-1].endswith(": 1, holding 5 of the 6 written")
    assert plain.splitlines()[0] == "look = plain" and "only in spacing: 1 of 2" in plain
    longer = spacing_report(predictions, "--min-run", "6", "--edits", "1")
    assert longer.stdout.splitlines()[-3:] == [
        "the commonest differences in them, reference -> reading (- is nothing):",
        "       1  \\, -> \\;",
        "readings holding a run of 6+ spacing commands: 0, holding 0 of the 8 written",
    ]
    assert "reference -> reading" not in spacing_report(predictions, "--edits", "0").stdout


def test_edits_align_spacing_spans():
    assert tool.spacing_edits("a \\; b ~ c".split(), "a ~ b ~ c \\,".split()) == [("\\;", "~"), ("-", "\\,")]
    assert tool.spacing_edits("a b".split(), "a b".split()) == []


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--min-run", "0"], "--min-run must be at least 1, got 0"),
        (["--edits", "-1"], "--edits must be at least 0, got -1"),
        (["--group-by", "style.dpi"], "line 1 has no style.dpi"),
    ],
)
def test_bad_arguments_exit_2(predictions, arguments, message, capsys):
    with pytest.raises(SystemExit) as raised:
        tool.main([str(predictions), *arguments])
    assert raised.value.code == 2 and message in capsys.readouterr().err


def test_missing_or_broken_file_exits_2(predictions, capsys):
    with pytest.raises(SystemExit) as raised:
        tool.main([str(predictions.parent / "none.jsonl")])
    error = capsys.readouterr().err
    assert raised.value.code == 2 and "no such file" in error and "none.jsonl" in error
    predictions.write_text(json.dumps(RECORDS[0]) + "\nnot json\n")
    with pytest.raises(SystemExit) as raised:
        tool.main([str(predictions)])
    assert raised.value.code == 2 and "line 2 is not JSON" in capsys.readouterr().err
    predictions.write_text("")
    with pytest.raises(SystemExit) as raised:
        tool.main([str(predictions)])
    assert raised.value.code == 2 and "no predictions in it" in capsys.readouterr().err
