"""Text-to-text evaluation and prediction: the targets' loss under teacher forcing, then each row's answer
decoded (generation.py) and scored against its references (text_metrics.py): exact match and token F1 as
SQuAD's v1.1 evaluation computes them, ROUGE-1/2/L and BLEU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch

from ..data.batching import Encoder
from ..data.tasks import Row, Task
from ..engine.prompted import PromptedModel, ScoringMode
from .generation import generate_texts, in_blocks
from .text_metrics import row_metrics, text_metrics


@torch.no_grad()
def target_loss(
    lm: PromptedModel, encoder: Encoder, rows: Sequence[Row], batch_size: int = 32, mode: ScoringMode | None = None,
    progress: bool = False,
) -> float:
    """Mean negative log-likelihood per target token (target and EOS) after each row: what training lowers."""
    total, tokens = 0.0, 0
    for block in in_blocks(rows, batch_size, progress):
        targets = [[encoder.target_ids(row)] for row in block]
        scores = lm.score_rows([encoder.input_ids(row) for row in block], targets, batch_size=batch_size, mode=mode)
        total -= float(torch.stack(scores).sum())
        tokens += sum(len(target[0]) for target in targets)
    return total / tokens


def evaluate_text(
    lm: PromptedModel,
    encoder: Encoder,
    rows: Sequence[Row],
    batch_size: int = 32,
    mode: ScoringMode | None = None,
    generate: bool = True,
    progress: bool = False,
    **sampling,
) -> dict[str, object]:
    """Held-out metrics of a text-to-text task: n, loss, perplexity and, with `generate`, exact_match, f1,
    rouge1, rouge2, rougeL and bleu of the decoded answers (greedy, unless `sampling` says temperature and
    top_p with a seed), examples_per_s."""
    start = time.perf_counter()
    loss = target_loss(lm, encoder, rows, batch_size, mode, progress)
    result: dict[str, object] = {"n": len(rows), "loss": loss, "perplexity": math.exp(min(loss, 50.0))}
    if generate:
        answers = generate_texts(lm, encoder, rows, batch_size, progress=progress, **sampling)
        metrics = text_metrics(answers, [encoder.task.references(row) for row in rows])
        result.update({key: value for key, value in metrics.items() if key != "n"})
    result["examples_per_s"] = len(rows) / (time.perf_counter() - start)
    return result


def predict_text(
    lm: PromptedModel, encoder: Encoder, rows: Sequence[Row], batch_size: int = 32, progress: bool = False, **sampling
) -> list[dict]:
    """Per row: the generated text; beside it, where the row holds its target, the references and the row's
    exact_match, f1, ROUGE and BLEU."""
    answers = generate_texts(lm, encoder, rows, batch_size, progress=progress, **sampling)
    return beside_references(encoder.task, rows, answers)


def beside_references(task: Task, rows: Sequence[Row], answers: Sequence[str]) -> list[dict]:
    """Prediction records of the rows' answers (decoded here or by a server): `{"prediction": text}`, with the
    references and the row's scores where the row holds its target."""
    predictions = []
    for row, answer in zip(rows, answers):
        prediction: dict[str, object] = {"prediction": answer}
        if task.scorable(row):
            references = task.references(row)
            prediction.update(references=references, **row_metrics(answer, references))
        predictions.append(prediction)
    return predictions
