"""Count the hand spacing commands in `evaluate.py`'s readings against its references, and the loops among them.

    python tools/spacing_report.py eval/predictions.jsonl                           # the whole set
    python tools/spacing_report.py eval/predictions.jsonl --group-by style.degradation --min-run 5

Prints, per spacing command (`~ \\, \\; \\: \\! \\quad \\qquad`), how often the readings write it and the references
hold it, both in the canonical form that the metrics compare (control space is `~` there); how many readings differ
from their reference only in spacing commands; and how many hold a run of `--min-run` or more spacing commands of any
kinds in a row (mostly loops), with the spacing commands those runs hold. Of the readings that differ only in
spacing, it lists the commonest differences, aligned token by token (`\\; -> ~`: the reference's `\\;` read as `~`;
`-` is nothing), which show what the model confuses rather than how much it writes.
`--group-by` does the same for each value of a field that `evaluate.py --group-by` wrote into the readings.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere: the repository's modules

from data.normalize import canonical  # noqa: E402
from data.readings import read_readings  # noqa: E402
from data.spacing import without_spacing  # noqa: E402
from modeling.tokenization_im2latex import SPACING_COMMANDS  # noqa: E402


def spacing_runs(formula: str) -> list[int]:
    """The lengths of the runs of spacing commands (of any kinds) in `formula` (canonical tokens), in order."""
    runs, run = [], 0
    for token in formula.split():
        if token in SPACING_COMMANDS:
            run += 1
        elif run:
            runs.append(run)
            run = 0
    return runs + [run] if run else runs


def spacing_report(records: list[dict], min_run: int = 5) -> dict:
    """Spacing counts of `records` (dicts with `reference` and `prediction`, both in the canonical form that the
    metrics compare: `data.normalize.canonical`, where control space is `~`): `written` and `references` per command,
    `readings`, `spacing_only` (readings that differ from the reference in spacing commands alone), `looping` (readings
    holding a run of at least `min_run`), `in_runs` (the spacing commands in those runs) and `edits`: how often each
    (reference, reading) pair of token spans differs in the spacing-only readings, `-` for an empty span."""
    written, references, edits = Counter(), Counter(), Counter()
    spacing_only = looping = in_runs = 0
    for record in records:
        prediction, reference = record["prediction"], record["reference"]
        predicted, referenced = prediction.split(), reference.split()
        written.update(token for token in predicted if token in SPACING_COMMANDS)
        references.update(token for token in referenced if token in SPACING_COMMANDS)
        if predicted != referenced and without_spacing(prediction) == without_spacing(reference):
            spacing_only += 1
            edits.update(spacing_edits(referenced, predicted))
        long_runs = [run for run in spacing_runs(prediction) if run >= min_run]
        looping += bool(long_runs)
        in_runs += sum(long_runs)
    return {
        "readings": len(records),
        "written": {command: written[command] for command in SPACING_COMMANDS},
        "references": {command: references[command] for command in SPACING_COMMANDS},
        "spacing_only": spacing_only,
        "looping": looping,
        "in_runs": in_runs,
        "edits": edits,
    }


def spacing_edits(reference: list[str], reading: list[str]) -> list[tuple[str, str]]:
    """The spans in which two token lists differ, aligned by `difflib`, as (reference span, reading span) strings;
    `-` stands for an empty span."""
    matcher = difflib.SequenceMatcher(a=reference, b=reading, autojunk=False)
    return [
        (" ".join(reference[i1:i2]) or "-", " ".join(reading[j1:j2]) or "-")
        for operation, i1, i2, j1, j2 in matcher.get_opcodes()
        if operation != "equal"
    ]


def format_report(report: dict, min_run: int, edits: int = 5) -> str:
    lines = [f"{'command':<10}{'written':>10}{'references':>12}"]
    for command in SPACING_COMMANDS:
        lines.append(f"{command:<10}{report['written'][command]:>10}{report['references'][command]:>12}")
    written, references = sum(report["written"].values()), sum(report["references"].values())
    lines.append(f"{'all':<10}{written:>10}{references:>12}")
    lines.append(
        f"readings differing from the reference only in spacing: {report['spacing_only']} of {report['readings']}"
    )
    commonest = report["edits"].most_common(edits)
    if commonest:
        lines.append("the commonest differences in them, reference -> reading (- is nothing):")
        lines.extend(f"{count:>8}  {reference} -> {reading}" for (reference, reading), count in commonest)
    lines.append(
        f"readings holding a run of {min_run}+ spacing commands: {report['looping']}, "
        f"holding {report['in_runs']} of the {written} written"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path, help="predictions.jsonl written by evaluate.py")
    parser.add_argument("--min-run", type=int, default=5, help="count readings with a spacing run this long or longer")
    parser.add_argument("--edits", type=int, default=5, help="list this many of the commonest spacing differences")
    parser.add_argument("--group-by", metavar="FIELD", help="also report each value of this field of the readings")
    args = parser.parse_args(argv)
    if args.min_run < 1:
        parser.error(f"--min-run must be at least 1, got {args.min_run}")
    if args.edits < 0:
        parser.error(f"--edits must be at least 0, got {args.edits}")
    try:
        records = read_readings(args.predictions, [args.group_by] if args.group_by else [])
    except ValueError as error:
        parser.error(str(error))
    for record in records:  # once, whatever the groups
        record["prediction"], record["reference"] = canonical(record["prediction"]), canonical(record["reference"])
    print(format_report(spacing_report(records, args.min_run), args.min_run, args.edits))
    if args.group_by:
        for value in sorted({str(record[args.group_by]) for record in records}):
            group = [record for record in records if str(record[args.group_by]) == value]
            report = format_report(spacing_report(group, args.min_run), args.min_run, args.edits)
            print(f"\n{args.group_by} = {value}\n{report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
