"""Rows from files and the hub: CSV, TSV (GLUE style), JSONL, or a `datasets` split; every row a dict of strings.

Each problem is a one-line error naming the file and the line or row, since rows come from users' files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

from ..utils.errors import SoftpromptError

Row = dict[str, str]


def read_rows(path: str | os.PathLike) -> list[Row]:
    """Rows of a CSV, TSV (GLUE style: no quoting) or JSONL file, or `hf:NAME[:CONFIG]:SPLIT`."""
    spec = str(path)
    if spec.startswith("hf:"):
        return read_hub(*_split_hub_spec(spec))
    file = Path(spec)
    if not file.is_file():
        raise SoftpromptError(f"{spec}: no such file")
    return parse_rows(file.read_bytes(), spec, file.suffix)


def parse_rows(data: bytes, spec: str, suffix: str) -> list[Row]:
    """Rows of a file's bytes (read from disk, or uploaded to a server), by the file's type (`suffix`); errors
    name `spec`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SoftpromptError(f"{spec}: not UTF-8 text (bad byte at offset {exc.start}, line {line})") from None
    handle = io.StringIO(text.removeprefix("\ufeff"), newline="")
    suffix = suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = _read_jsonl(handle, spec)
    elif suffix in (".tsv", ".txt"):
        rows = _read_delimited(handle, spec, "\t", csv.QUOTE_NONE)
    elif suffix == ".csv":
        rows = _read_delimited(handle, spec, ",", csv.QUOTE_MINIMAL)
    else:
        raise SoftpromptError(f"{spec}: unknown file type {suffix!r} (use .csv, .tsv or .jsonl)")
    if not rows:
        raise SoftpromptError(f"{spec}: no rows")
    return rows


def _read_delimited(handle, source: str, delimiter: str, quoting: int) -> list[Row]:
    csv.field_size_limit(sys.maxsize)
    reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
    header = next(reader, None)
    if not header:
        raise SoftpromptError(f"{source}: empty file")
    duplicates = {name for name in header if header.count(name) > 1}
    if duplicates:
        raise SoftpromptError(f"{source}: duplicate column {sorted(duplicates)[0]!r} in the header")
    rows = []
    try:
        for values in reader:
            if not values:
                continue
            if len(values) != len(header):
                raise SoftpromptError(
                    f"{source} row {len(rows) + 1} (line {reader.line_num}): {len(values)} fields, "
                    f"header has {len(header)}"
                )
            rows.append(dict(zip(header, values)))
    except csv.Error as exc:
        raise SoftpromptError(f"{source} line {reader.line_num}: {exc}") from None
    return rows


def _read_jsonl(handle, source: str) -> list[Row]:
    rows = []
    for line_number, line in enumerate(handle, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SoftpromptError(f"{source} line {line_number}: not JSON ({exc.msg})") from None
        except (ValueError, RecursionError):  # huge integers, very deep nesting
            raise SoftpromptError(
                f"{source} line {line_number}: not JSON we can read (too large or too deep)"
            ) from None
        if not isinstance(record, dict):
            raise SoftpromptError(f"{source} line {line_number}: expected a JSON object")
        rows.append({str(k): _as_text(v) for k, v in record.items()})
    return rows


def _as_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _split_hub_spec(spec: str) -> tuple[str, str | None, str]:
    parts = spec[3:].split(":")
    if len(parts) == 2:
        return parts[0], None, parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise SoftpromptError(f"{spec}: write hub splits as hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT")


def read_hub(path: str, name: str | None, split: str, label_names: bool = False) -> list[Row]:
    try:
        import datasets
    except ImportError:
        raise SoftpromptError("reading hub datasets needs: pip install 'softprompt[datasets]'") from None
    try:
        data = datasets.load_dataset(path, name, split=split)
    except Exception as exc:  # the hub raises many types; all mean "not reachable or not found"
        raise SoftpromptError(f"hf:{path}:{name}:{split}: cannot load ({str(exc).splitlines()[0]})") from None
    names = {
        column: feature.names
        for column, feature in data.features.items()
        if label_names and isinstance(feature, datasets.ClassLabel)
    }
    return [
        {k: names[k][v] if k in names else (v if isinstance(v, str) else _as_text(v)) for k, v in row.items()}
        for row in data
    ]
