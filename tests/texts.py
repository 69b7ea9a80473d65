"""What the text-to-text tests share (test_text_tasks.py, test_text_errors.py, test_generation.py): small
question-answer rows written as JSONL, and the training recipe of a text task on a tiny random model
(models/synthetic.py: its own tokenizer, no download)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from softprompt.models.synthetic import CORPUS
from softprompt.training.train import TrainConfig

TEMPLATE = "Question : {question} Answer : "
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
MAX_NEW_TOKENS = 8


def qa_rows(n: int, start: int = 0) -> list[dict]:
    """`n` rows of a question, its answer (the target) and a JSON list of references (the answer first)."""
    rows = []
    for i in range(start, start + n):
        word, after = WORDS[i % 9], WORDS[i % 9 + 1]
        rows.append({"id": str(i), "question": f"which number comes after {word}?", "answer": f"number {after}",
                     "answers": json.dumps([f"number {after}", after])})  # fmt: skip
    return rows


def corpus_rows(n: int) -> list[dict]:
    """`n` rows of different questions and lengths (pieces of the tiny tokenizer's corpus), without targets."""
    pieces = [" ".join(p.split()[:12]) for p in re.split(r"[.;:?!]", CORPUS) if len(p.split()) >= 3]
    assert len(pieces) >= n
    return [{"question": piece} for piece in pieces[:n]]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def text_config(model_dir: Path, train: Path, output: Path, **overrides) -> TrainConfig:
    """A short text-to-text run of `train`'s rows on the model in `model_dir`."""
    values = dict(model=str(model_dir), train=str(train), template=TEMPLATE, target_field="answer",
                  references_field="answers", max_new_tokens=MAX_NEW_TOKENS, num_virtual_tokens=4,
                  init="sampled-vocab", lr=0.3, batch_size=4, max_steps=4, dtype="float32", output=str(output),
                  progress=False)  # fmt: skip
    return TrainConfig(**{**values, **overrides})
