"""TunedPrompt: a soft prompt with its task on a base model — what `save_pretrained` writes and eval/predict use."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.batching import Encoder
from ..data.tasks import Row, Task
from ..engine.causal import PromptedCausalLM
from ..engine.prompted import PromptedModel, ScoringMode
from ..engine.seq2seq import PromptedSeq2SeqLM
from ..models.base import load_base
from ..models.prepacked import PrepackedLinear
from ..models.prompt import SoftPrompt
from ..utils.errors import ParameterError, SoftpromptError
from ..utils.hardware import resolve_device
from . import checkpoint
from .evaluate import evaluate, label_scores


def prompted(
    base, prompt: SoftPrompt, head: Sequence[int] = (), mode: ScoringMode | str = ScoringMode.PACKED
) -> PromptedModel:
    """The prompted model for this architecture: decoder-only or encoder-decoder (which has no use for the
    template `head`: its encoder sees the prompt and the whole input together)."""
    if getattr(base.config, "is_encoder_decoder", False):
        return PromptedSeq2SeqLM(base, prompt, mode)
    return PromptedCausalLM(base, prompt, mode, head)


@dataclass
class TunedPrompt:
    lm: PromptedModel
    tokenizer: object
    task: Task
    max_length: int = 64
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        seq2seq = getattr(self.lm.base.config, "is_encoder_decoder", False)
        self.encoder = Encoder(self.task, self.tokenizer, self.max_length, input_eos=seq2seq)

    @classmethod
    def build(
        cls,
        base,
        tokenizer,
        prompt: SoftPrompt,
        task: Task,
        max_length: int = 64,
        meta: dict | None = None,
        mode: ScoringMode | str = ScoringMode.PACKED,
    ) -> TunedPrompt:
        """A prompt for `task` on `base`, its prompted model told the task's template head, whose keys/values
        are then computed once with the prompt's instead of once per row."""
        seq2seq = getattr(base.config, "is_encoder_decoder", False)
        head = Encoder(task, tokenizer, max_length, input_eos=seq2seq).head_ids
        return cls(prompted(base, prompt, head, mode), tokenizer, task, max_length, meta or {})

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        base=None,
        dtype: str = "auto",
        model: str | None = None,
        task: Task | None = None,
        device: str | torch.device = "auto",
    ) -> TunedPrompt:
        """Load a prompt folder (ours, or PEFT's given `task`) on `base` = (model, tokenizer), else on the
        model the folder names, loaded on `device`; or a model-tuned folder (its own model, behind a prompt of
        no tokens). The prompt goes to the base's device."""
        if checkpoint.read_meta(folder).get("method") == "model-tuning":
            return cls._model_tuned(Path(folder), dtype, task, device)
        prompt, config, meta = checkpoint.load_prompt(folder)
        if task is None and "task" not in meta:
            raise SoftpromptError(f"{folder}: no {checkpoint.META} with a task; pass the task's template and labels")
        trained_on = meta.get("base_model") or config.get("base_model_name_or_path")
        if model and trained_on and model != trained_on:
            warnings.warn(f"{folder}: prompt was trained on {trained_on!r}, loading it on {model!r}", stacklevel=2)
        if base is None:
            ref = model or trained_on
            if not ref:
                raise ParameterError("model", "{folder} names no base model; pass one", folder=str(folder))
            base = load_base(ref, dtype, device=device)
        checkpoint.check_hidden_size(Path(folder), prompt, base[0].config.get_text_config().hidden_size)
        task = task or Task.from_json(meta["task"])
        return cls.build(base[0], base[1], SoftPrompt(prompt), task, meta.get("max_length", 64), meta)

    @classmethod
    def _model_tuned(cls, folder: Path, dtype: str, task: Task | None, device: str | torch.device) -> TunedPrompt:
        meta = checkpoint.read_meta(folder)
        model, tokenizer = load_base(str(folder), dtype, device=device)
        empty = SoftPrompt.frozen(torch.zeros(0, model.config.get_text_config().hidden_size, device=model.device))
        return cls.build(
            model, tokenizer, empty, task or Task.from_json(meta["task"]), meta.get("max_length", 64), meta
        )

    def save_pretrained(self, folder: str | os.PathLike, **extra) -> None:
        """A prompt folder in PEFT's format; after model tuning, a Hugging Face model folder (safetensors)."""
        base = self.lm.base
        if self.meta.get("method") == "model-tuning":
            self.meta.update(task=self.task.to_json(), max_length=self.max_length, **extra)
            checkpoint.save_model(Path(folder), base, self.tokenizer, self.meta)
            return
        init = self.meta.get("init", "random-uniform")
        config = checkpoint.adapter_config(
            self.lm.prompt.embedding, base.config, base.name_or_path, init, self.meta.get("init_text")
        )
        self.meta.update(task=self.task.to_json(), max_length=self.max_length, base_model=base.name_or_path, **extra)
        checkpoint.save_prompt(Path(folder), self.lm.prompt.embedding, config, self.meta)

    def to(self, device: str | torch.device) -> TunedPrompt:
        """Move the base and the prompt to `device` (in place: prompts sharing this base move with it); kept
        keys/values are recomputed there on next use. A base prepacked for the CPU's oneDNN cannot move: load
        it on the device instead (`load_base(..., device=)`)."""
        device = resolve_device(device)
        if any(isinstance(module, PrepackedLinear) for module in self.lm.base.modules()) and device.type != "cpu":
            raise SoftpromptError(f"this base's weights are prepacked for the CPU; load it with device={str(device)!r}")
        self.lm.to(device)
        return self

    def evaluate(self, rows: Sequence[Row], batch_size: int = 32, **kwargs) -> dict[str, object]:
        return evaluate(self.lm, self.encoder, rows, batch_size, **kwargs)

    @torch.no_grad()
    def predict(self, rows: Sequence[Row], batch_size: int = 32, length_normalize: bool = False) -> list[dict]:
        """Per row: the predicted label and each label's log-likelihood."""
        scores, lengths = label_scores(self.lm, self.encoder, rows, batch_size)
        ranked = scores / lengths if length_normalize else scores
        labels = self.task.labels
        return [{"label": labels[int(row.argmax())], "scores": dict(zip(labels, map(float, row)))} for row in ranked]
