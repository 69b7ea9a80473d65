"""Prompt design, the paper's untrained baseline: k labelled training examples written in front of each input.

GPT-3's few-shot prompting, put where a soft prompt goes: the demonstrations' token embeddings become the
"prompt" (frozen; nothing is trained), so they are scored exactly as a tuned prompt is — the same rows, the
same input cut to `max_length`, the same label scoring and metrics, the same folder that `eval`, `serve`
and `ensemble` read. Their keys/values are computed once per evaluation, as a tuned prompt's are.

Each demonstration is an example rendered by the task's template (cut like any input), its label word and
the end-of-sequence token: the very continuation every label is scored by. The examples are drawn seeded
and stratified (labels in turn). A row never loses its own input to them: examples are dropped, the last
first, only where the demonstrations would crowd the row out of the model's context.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch

from . import checkpoint
from .batching import Encoder
from .errors import ParameterError
from .methods import base_for_run
from .prompt import SoftPrompt
from .tasks import Row, Task
from .train import load_data
from .train_config import TrainConfig
from .tuned import TunedPrompt


def draw_examples(rows: Sequence[Row], task: Task, shots: int, seed: int) -> list[Row]:
    """`shots` training rows, labels taken in turn (each label's rows shuffled by `seed`), then shuffled."""
    if not 0 <= shots <= len(rows):
        raise ParameterError("shots", "must be between 0 and the {n} training rows, got {shots}", n=len(rows),
                             shots=shots)  # fmt: skip
    rng = random.Random(seed)
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
        shot = encoder.input_ids(example) + encoder.label_ids[encoder.task.label_index(example)]
        if len(ids) + len(shot) + encoder.max_length > context:
            return ids, kept
        ids += shot
    return ids, len(examples)


def design_prompt(model, encoder: Encoder, rows: Sequence[Row], shots: int, seed: int) -> tuple[SoftPrompt, list[Row]]:
    """The demonstrations of `shots` examples from `rows` as a frozen prompt (their embeddings as the model's
    own embedding layer gives them, scaling included), and the examples that fit."""
    examples = draw_examples(rows, encoder.task, shots, seed)
    context = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 2048
    ids, kept = demonstration_ids(encoder, examples, context)
    with torch.no_grad():
        layer = model.get_input_embeddings()
        embeds = layer(torch.tensor([ids], dtype=torch.long, device=layer.weight.device))[0]
    return SoftPrompt.frozen(embeds), examples[:kept]


def run_design(config: TrainConfig, shots: int, base=None, overwrite: bool = False) -> TunedPrompt:
    """Prompt design over `config`'s data, model, seed, max_length and output: the prompt folder it writes
    holds the demonstrations, with the dev metrics (if `config` carves or names a dev set) in its metadata."""
    output = Path(config.output)
    if (output / checkpoint.WEIGHTS).exists() and not overwrite:
        raise ParameterError("output", "{path} already holds a prompt; pass {overwrite} or another {output}",
                             path=str(output))  # fmt: skip
    task, train_rows, eval_rows = load_data(config)
    model, tokenizer, meta = base_for_run(config, base, config.dtype, "prompt-design")
    encoder = Encoder(task, tokenizer, config.max_length, input_eos=model.config.is_encoder_decoder)
    prompt, examples = design_prompt(model, encoder, train_rows, shots, config.seed)
    meta.update(init="prompt-design", shots=len(examples), examples=examples)
    tuned = TunedPrompt.build(model, tokenizer, prompt, task, config.max_length, meta)
    if eval_rows:
        tuned.meta["metrics"] = tuned.evaluate(eval_rows, config.eval_batch_size)
    tuned.save_pretrained(output)
    return tuned
