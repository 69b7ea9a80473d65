"""Labelled training examples written out in front of each input, GPT-3's few-shot prompting, as embeddings.

Prompt design holds them as a frozen prompt (the paper's untrained baseline); `--init prompt-design` starts a
tuned prompt from them. Each demonstration is an example rendered by the task's template (cut like any input),
its label word (or text-to-text target) and the end-of-sequence token: the very continuation every label is
scored by, or a target is trained to. The examples are drawn seeded, and for classification stratified (labels
in turn). A row never loses its own input to them: examples are dropped, the last first, only where the
demonstrations would crowd the row out of the model's context.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from ..data.batching import Encoder
from ..data.tasks import Row, Task
from ..utils.errors import ParameterError


def draw_examples(rows: Sequence[Row], task: Task, shots: int, seed: int) -> list[Row]:
    """`shots` training rows, labels taken in turn (each label's rows shuffled by `seed`), then shuffled; for a
    text-to-text task, a seeded sample of the rows."""
    if not 0 <= shots <= len(rows):
        raise ParameterError("shots", "must be between 0 and the {n} training rows, got {shots}", n=len(rows),
                             shots=shots)  # fmt: skip
    rng = random.Random(seed)
    if task.generates:
        return rng.sample(list(rows), shots)
    by_label = [[row for row in rows if row[task.label_field] == label] for label in task.labels]
    for group in by_label:
        rng.shuffle(group)
    picked: list[Row] = []
    while len(picked) < shots:
        for group in by_label:
            if group and len(picked) < shots:
                picked.append(group.pop())
    rng.shuffle(picked)
    return picked


def demonstration_ids(encoder: Encoder, examples: Sequence[Row], context: int) -> tuple[list[int], int]:
    """The examples' token ids (input cut as any row's, label word, EOS), kept whole while they leave
    `encoder.max_length` of `context` for the row that follows; and how many examples that is."""
    ids: list[int] = []
    for kept, example in enumerate(examples):
        shot = encoder.input_ids(example) + encoder.target_ids(example)
        if len(ids) + len(shot) + encoder.max_length > context:
            return ids, kept
        ids += shot
    return ids, len(examples)


def demonstrations(
    model, encoder: Encoder, rows: Sequence[Row], shots: int, seed: int
) -> tuple[torch.Tensor, list[Row]]:
    """The demonstrations of `shots` examples from `rows` as embeddings [tokens, hidden] (as the model's own
    embedding layer gives them, scaling included), and the examples that fit."""
    examples = draw_examples(rows, encoder.task, shots, seed)
    context = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 2048
    ids, kept = demonstration_ids(encoder, examples, context)
    with torch.no_grad():
        layer = model.get_input_embeddings()
        embeds = layer(torch.tensor([ids], dtype=torch.long, device=layer.weight.device))[0]
    return embeds, examples[:kept]

