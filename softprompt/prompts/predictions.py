"""Prediction files: one row per input, as CSV (row number, label, each label's score) or JSONL (one
`{"label", "scores"}` object per line), written atomically so a reader never sees half a file."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..utils.errors import ParameterError
from .checkpoint import atomic_write


def write_predictions(output: str | os.PathLike, predictions: Sequence[dict], labels: Sequence[str]) -> None:
    """Write `predictions` (TunedPrompt.predict's dicts) to a .csv or .jsonl file; `labels` orders the scores."""
    output = Path(output)
    if output.suffix == ".jsonl":
        text = "".join(json.dumps(p) + "\n" for p in predictions)
    elif output.suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["row", "label", *[f"score:{label}" for label in labels]])
        for number, p in enumerate(predictions, 1):
            writer.writerow([number, p["label"], *[f"{p['scores'][label]:.6f}" for label in labels]])
        text = buffer.getvalue()
    else:
        raise ParameterError("output", "{path}: use a .csv or .jsonl file name", path=str(output))
    atomic_write(output, text.encode("utf-8"))
