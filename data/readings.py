"""A run's saved readings: the `predictions.jsonl` that `evaluate.py` writes, one JSON record per line, read back
for `evaluate.py --rescore` and `tools/spacing_report.py`."""

import json
from pathlib import Path


def read_readings(path: Path, fields) -> list[dict]:
    """The records of `path`, each checked for `reference`, `prediction` and `fields`.

    Raises:
        ValueError: naming `path` (and the line) when it is missing, holds a line that is not JSON or lacks a field,
            or holds no records.
    """
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    records = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: line {number} is not JSON ({error})") from None
            missing = {"reference", "prediction", *fields} - set(record)
            if missing:
                raise ValueError(f"{path}: line {number} has no {', '.join(sorted(missing))}")
            records.append(record)
    if not records:
        raise ValueError(f"{path}: no predictions in it")
    return records
