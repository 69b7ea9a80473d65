"""TunedPrompt: a soft prompt with its task on a base model — what `save_pretrained` writes and eval/predict use."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.batching import DEFAULT_NEW_TOKENS, Encoder, chat_frame_ids
from ..data.tasks import Row, Task
from ..engine.causal import PromptedCausalLM
from ..engine.prompted import PromptedModel, ScoringMode
from ..engine.seq2seq import PromptedSeq2SeqLM
from ..models.base import Base, load_base
from ..models.prepacked import PrepackedLinear
from ..models.prompt import SoftPrompt
from ..utils.errors import ParameterError, SoftpromptError
from ..utils.hardware import resolve_device
from . import checkpoint
from .evaluate import evaluate, label_scores
from .record import FolderRecord
from .text_evaluate import evaluate_text, predict_text


def prompted(
    model, prompt: SoftPrompt, head: Sequence[int] = (), mode: ScoringMode | str = ScoringMode.PACKED
) -> PromptedModel:
    """The prompted model for this architecture: decoder-only or encoder-decoder (which has no use for the
    template `head`: its encoder sees the prompt and the whole input together)."""
    if getattr(model.config, "is_encoder_decoder", False):
        return PromptedSeq2SeqLM(model, prompt, mode)
    return PromptedCausalLM(model, prompt, mode, head)


DEFAULT_MAX_LENGTH = 64


def encoder_for(base: Base, task: Task, max_length: int | None = None) -> Encoder:
    """The task's encoder on this base, `max_length` tokens of input and target (default: the task's, else 64,
    and for text to text 64 beside the target's budget, and for a chat 64 beside the chat template's frame):
    an encoder-decoder's inputs keep their EOS (T5 was trained so)."""
    seq2seq = bool(getattr(base.model.config, "is_encoder_decoder", False))
    default = DEFAULT_MAX_LENGTH + ((task.max_new_tokens or DEFAULT_NEW_TOKENS) + 1 if task.generates else 0)
    if task.chat and not (max_length or task.max_length):
        default += sum(map(len, chat_frame_ids(base.tokenizer)))
    return Encoder(task, base.tokenizer, max_length or task.max_length or default, input_eos=seq2seq)


@dataclass
class TunedPrompt:
    """A prompted model with its task's encoder (rows -> ids, the same in training, eval and serving) and the
    record its folder keeps."""

    lm: PromptedModel
    encoder: Encoder
    record: FolderRecord = field(default_factory=FolderRecord)

    @property
    def task(self) -> Task:
        return self.encoder.task

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    @property
    def base(self) -> Base:
        """The base model and tokenizer this prompt runs on (shared with every prompt loaded on them)."""
        return Base(self.lm.model, self.tokenizer)

    @classmethod
    def build(
        cls,
        base: Base,
        prompt: SoftPrompt,
        task: Task | Encoder,
        max_length: int | None = None,
        record: FolderRecord | None = None,
        mode: ScoringMode | str = ScoringMode.PACKED,
    ) -> TunedPrompt:
        """A prompt for `task` (or its encoder, made once by the caller) on `base`, its prompted model told the
        task's template head, whose keys/values are then computed once with the prompt's, not once per row."""
        encoder = task if isinstance(task, Encoder) else encoder_for(base, task, max_length)
        return cls(prompted(base.model, prompt, encoder.head, mode), encoder, record or FolderRecord())

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        base: Base | None = None,
        dtype: str = "auto",
        model: str | None = None,
        task: Task | None = None,
        device: str | torch.device = "auto",
    ) -> TunedPrompt:
        """Load a prompt folder (ours, or PEFT's given `task`) on `base`, else on the model the folder names,
        loaded on `device`; or a model-tuned folder (its own model, behind a prompt of no tokens). The prompt
        goes to the base's device."""
        record = FolderRecord.read(folder)
        if record.method.trains_model:
            base = load_base(str(folder), dtype, device=device)
            size = base.model.config.get_text_config().hidden_size
            empty = SoftPrompt.frozen(torch.zeros(0, size, device=base.device))
            return cls.build(base, empty, task or record.task, record.max_length, record)
        prompt, config = checkpoint.load_prompt(folder)
        if task is None and record.task is None:
            raise SoftpromptError(f"{folder}: no {checkpoint.META} with a task; pass the task's template and labels")
        trained_on = record.base_model or config.get("base_model_name_or_path")
        if model and trained_on and model != trained_on:
            warnings.warn(f"{folder}: prompt was trained on {trained_on!r}, loading it on {model!r}", stacklevel=2)
        if base is None:
            ref = model or trained_on
            if not ref:
                raise ParameterError("model", "{folder} names no base model; pass one", folder=str(folder))
            base = load_base(ref, dtype, device=device)
        checkpoint.check_hidden_size(Path(folder), prompt, base.model.config.get_text_config().hidden_size)
        return cls.build(base, SoftPrompt(prompt), task or record.task, record.max_length, record)

    def save_pretrained(self, folder: str | os.PathLike, **extra) -> None:
        """A prompt folder in PEFT's format; after model tuning, a Hugging Face model folder (safetensors). The
        record (with `extra`: metrics, step) is written last."""
        model = self.lm.model
        self.record = record = dataclasses.replace(self.record, task=self.task, max_length=self.max_length, **extra)
        if record.method.trains_model:
            checkpoint.save_model(Path(folder), model, self.tokenizer)
        else:
            record.base_model = model.name_or_path
            config = checkpoint.adapter_config(self.lm.prompt.embedding, model.config, model.name_or_path,
                                               record.init or "random-uniform", record.init_text)  # fmt: skip
            checkpoint.save_prompt(Path(folder), self.lm.prompt.embedding, config)
        record.write(folder)

    def to(self, device: str | torch.device) -> TunedPrompt:
        """Move the base and the prompt to `device` (in place: prompts sharing this base move with it); kept
        keys/values are recomputed there on next use. A base prepacked for the CPU's oneDNN cannot move: load
        it on the device instead (`load_base(..., device=)`)."""
        device = resolve_device(device)
        if any(isinstance(module, PrepackedLinear) for module in self.lm.model.modules()) and device.type != "cpu":
            raise SoftpromptError(f"this base's weights are prepacked for the CPU; load it with device={str(device)!r}")
        self.lm.to(device)
        return self

    def evaluate(
        self,
        rows: Sequence[Row],
        batch_size: int = 32,
        *,
        mode: ScoringMode | None = None,
        progress: bool = False,
        method: str = "rank",
        length_normalize: bool = False,
        by_label: bool = False,
        generate: bool = True,
        **sampling,
    ) -> dict[str, object]:
        """Held-out metrics (evaluate.py's for classification: `method`, `length_normalize` and `by_label` are
        its; text_evaluate.py's for a text-to-text task: `generate` (else the loss alone) and `sampling` are)."""
        if self.task.generates:
            return evaluate_text(self.lm, self.encoder, rows, batch_size, mode, generate, progress, **sampling)
        return evaluate(self.lm, self.encoder, rows, batch_size, method, length_normalize, mode, by_label, progress)

    @torch.no_grad()
    def predict(
        self,
        rows: Sequence[Row],
        batch_size: int = 32,
        length_normalize: bool = False,
        progress: bool = False,
        **sampling,
    ) -> list[dict]:
        """Per row: the predicted label and each label's log-likelihood; for a text-to-text task the generated
        text (greedy, or as `sampling` says) beside its references and scores. `progress`: a bar on stderr."""
        if self.task.generates:
            return predict_text(self.lm, self.encoder, rows, batch_size, progress, **sampling)
        scores, lengths = label_scores(self.lm, self.encoder, rows, batch_size, progress=progress)
        ranked = scores / lengths if length_normalize else scores
        labels = self.task.labels
        return [{"label": labels[int(row.argmax())], "scores": dict(zip(labels, map(float, row)))} for row in ranked]
