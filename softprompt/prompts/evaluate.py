"""Scoring and metrics: rank classification by label log-likelihood, generate-then-match, accuracy, F1."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch

from ..data.batching import Encoder
from ..data.tasks import Row
from ..engine.prompted import PromptedModel, ScoringMode
from .generation import generate_texts, in_blocks


@torch.no_grad()
def label_scores(
    lm: PromptedModel,
    encoder: Encoder,
    rows: Sequence[Row],
    batch_size: int = 32,
    mode: ScoringMode | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log-probabilities of each label's tokens (word + EOS) after each row: ([N, L], lengths [L])."""
    labels = encoder.label_ids
    scores = []
    for block in in_blocks(rows, batch_size, progress):
        inputs = [encoder.input_ids(row) for row in block]
        scores += lm.score_rows(inputs, [labels] * len(block), batch_size=batch_size, mode=mode)
    # Back to the CPU once, for the metrics.
    return torch.stack(scores).cpu(), torch.tensor([len(t) for t in labels], dtype=torch.float32, device="cpu")


def generate_labels(
    lm: PromptedModel, encoder: Encoder, rows: Sequence[Row], batch_size: int = 32, progress: bool = False
) -> list[int]:
    """Generate after each row and match the text to a label word; -1 when nothing matches."""
    words = [w.strip().lower() for w in encoder.task.label_words]
    texts = generate_texts(lm, encoder, rows, batch_size, progress=progress)
    return [_match(text.lower(), words) for text in texts]


def _match(text: str, words: list[str]) -> int:
    if text in words:
        return words.index(text)
    starts = [i for i, w in enumerate(words) if text.startswith(w)]
    return max(starts, key=lambda i: len(words[i])) if starts else -1


NO_LABEL = "(no label)"  # the confusion matrix's last column where generated text matched no label word


def confusion_matrix(predicted: Sequence[int], gold: Sequence[int], n_labels: int) -> list[list[int]]:
    """Counts [gold label][predicted label]; a last column counts predictions that matched no label (-1, from
    `--method generate`), present only where there are such."""
    unmatched = any(p < 0 for p in predicted)
    matrix = [[0] * (n_labels + unmatched) for _ in range(n_labels)]
    for p, g in zip(predicted, gold):
        matrix[g][p if p >= 0 else n_labels] += 1
    return matrix


def label_metrics(matrix: list[list[int]], labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per label: precision, recall, F1 and support (its gold count); 0 where a ratio has nothing to count."""
    result = {}
    for i, label in enumerate(labels):
        tp, support = matrix[i][i], sum(matrix[i])
        predicted = sum(row[i] for row in matrix)
        fp, fn = predicted - tp, support - tp
        result[label] = {
            "precision": tp / predicted if predicted else 0.0,
            "recall": tp / support if support else 0.0,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
            "support": support,
        }
    return result


def classification_metrics(predicted: Sequence[int], gold: Sequence[int], n_labels: int) -> dict[str, float]:
    """Accuracy and macro-F1 (a label never predicted and never gold is left out of the mean)."""
    matrix = confusion_matrix(predicted, gold, n_labels)
    per_label = label_metrics(matrix, range(n_labels)).values()
    f1s = [m["f1"] for i, m in enumerate(per_label) if m["support"] or sum(row[i] for row in matrix)]
    accuracy = sum(matrix[i][i] for i in range(n_labels)) / len(gold)
    return {"accuracy": accuracy, "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0}


def evaluate(
    lm: PromptedModel,
    encoder: Encoder,
    rows: Sequence[Row],
    batch_size: int = 32,
    method: str = "rank",
    length_normalize: bool = False,
    mode: ScoringMode | None = None,
    by_label: bool = False,
    progress: bool = False,
) -> dict[str, object]:
    """Held-out metrics for labelled rows: n, loss, perplexity, accuracy, macro_f1, the majority class's
    accuracy and macro_f1, examples_per_s; `by_label` adds each label's precision, recall, F1 and support and
    the confusion matrix ({labels, columns, counts[gold][predicted]}). `progress`: a bar on stderr."""
    task = encoder.task
    gold = [task.label_index(row) for row in rows]
    start = time.perf_counter()
    scores, lengths = label_scores(lm, encoder, rows, batch_size, mode, progress)
    result: dict[str, float] = {"n": len(rows)}
    gold_t = torch.tensor(gold, device="cpu")
    loss = float(-scores[torch.arange(len(rows), device="cpu"), gold_t].sum() / lengths[gold_t].sum())
    result.update(loss=loss, perplexity=math.exp(min(loss, 50.0)))
    if method == "generate":
        predicted = generate_labels(lm, encoder, rows, batch_size, progress=progress)
    else:
        predicted = (scores / lengths if length_normalize else scores).argmax(1).tolist()
    result.update(classification_metrics(predicted, gold, len(task.labels)))
    if by_label:
        matrix = confusion_matrix(predicted, gold, len(task.labels))
        columns = task.labels + [NO_LABEL] * (len(matrix[0]) - len(task.labels))
        result["per_label"] = label_metrics(matrix, task.labels)
        result["confusion_matrix"] = {"labels": task.labels, "columns": columns, "counts": matrix}
    # The constant answer these rows reward most: a score that does not beat it has learned nothing.
    majority = max(range(len(task.labels)), key=gold.count)
    constant = classification_metrics([majority] * len(gold), gold, len(task.labels))
    result.update(majority_accuracy=constant["accuracy"], majority_macro_f1=constant["macro_f1"])
    result["examples_per_s"] = len(rows) / (time.perf_counter() - start)
    return result
