"""Prediction files: one row per input, as CSV (row number, label, each label's score; for a text-to-text task
the generated text, its references and scores) or JSONL (one `{"label", "scores"}` or `{"prediction",
"references", ...}` object per line), written atomically so a reader never sees half a file."""

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
        if labels:
            writer.writerow(["row", "label", *[f"score:{label}" for label in labels]])
            for number, p in enumerate(predictions, 1):
                writer.writerow([number, p["label"], *[f"{p['scores'][label]:.6f}" for label in labels]])
        else:  # text to text: the generated text beside its references (a JSON list) and scores, where known
            scores = list(dict.fromkeys(k for p in predictions for k in p if k not in ("prediction", "references")))
            writer.writerow(["row", "prediction", "references", *scores])
            for number, p in enumerate(predictions, 1):
                references = json.dumps(p["references"]) if "references" in p else ""
                writer.writerow([number, p["prediction"], references, *[f"{p[key]:.6f}" if key in p else ""
                                                                         for key in scores]])  # fmt: skip
        text = buffer.getvalue()
    else:
        raise ParameterError("output", "{path}: use a .csv or .jsonl file name", path=str(output))
    atomic_write(output, text.encode("utf-8"))
