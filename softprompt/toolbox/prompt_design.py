"""Prompt design, the paper's untrained baseline: k labelled training examples written in front of each input.

GPT-3's few-shot prompting, put where a soft prompt goes: the demonstrations' token embeddings become the
"prompt" (frozen; nothing is trained), so they are scored exactly as a tuned prompt is — the same rows, the
same input cut to `max_length`, the same label scoring and metrics, the same folder that `eval`, `serve`
and `ensemble` read. Their keys/values are computed once per evaluation, as a tuned prompt's are.

The demonstrations themselves (which examples, how they are written and cut) are demonstrations.py's.
"""

from __future__ import annotations

from pathlib import Path

from ..data.loading import load_data
from ..models.base import Base
from ..models.prompt import SoftPrompt
from ..prompts import checkpoint
from ..prompts.demonstrations import demonstrations
from ..prompts.method import PROMPT_DESIGN
from ..prompts.model_card import write_card
from ..prompts.tuned import TunedPrompt, encoder_for
from ..training.methods import base_for_run
from ..training.train_config import TrainConfig
from ..utils.errors import ParameterError


def run_design(config: TrainConfig, base: Base | None = None, overwrite: bool = False) -> TunedPrompt:
    """Prompt design over `config`'s data, model, seed, shots, max_length and output: the prompt folder it writes
    holds the demonstrations, with the dev metrics (if `config` carves or names a dev set) in its record."""
    output = Path(config.output)
    if (output / checkpoint.WEIGHTS).exists() and not overwrite:
        raise ParameterError("output", "{path} already holds a prompt; pass {overwrite} or another {output}",
                             path=str(output))  # fmt: skip
    task, train_rows, eval_rows = load_data(config)
    base, record = base_for_run(config, base, config.dtype, PROMPT_DESIGN)
    encoder = encoder_for(base, task, config.max_length)
    embeds, examples = demonstrations(base.model, encoder, train_rows, config.shots, config.seed)
    record.init, record.shots, record.examples = PROMPT_DESIGN.name, len(examples), examples
    tuned = TunedPrompt.build(base, SoftPrompt.frozen(embeds), encoder, record=record)
    if eval_rows:
        tuned.record.metrics = tuned.evaluate(eval_rows, config.eval_batch_size, by_label=True,
                                              progress=config.progress)  # fmt: skip
    tuned.save_pretrained(output)
    write_card(output)
    return tuned
