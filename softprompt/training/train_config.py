"""TrainConfig: every training option, with its help text and choices, so the CLI is generated from it.

A TOML file holds the same keys (dashes or underscores). Checks that need no data or model run here, before
anything loads; each names the parameter (`optimizer: ...`), which the CLI spells as its flag.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..models.base import DEFAULT_MODEL, MODEL_HELP
from ..models.prompt import INITS
from ..prompts.method import PROMPT_DESIGN, PROMPT_TUNING, TRAINED, Method, method_named
from ..utils.errors import ParameterError, SoftpromptError
from ..utils.hardware import DEVICE_HELP, DTYPE_CHOICES, resolve_device
from .reporting import REPORT_TO, check_installed

CLASSIFICATION_METRICS = ("accuracy", "macro_f1")
TEXT_METRICS = ("exact_match", "f1", "rougeL", "bleu")  # decoded greedily on the dev rows at each evaluation
METRICS = ("loss", *CLASSIFICATION_METRICS, *TEXT_METRICS)
DESIGN_INIT = PROMPT_DESIGN.name  # the prompt starts as `shots` demonstrations (demonstrations.py), not from INITS
OPTIMIZERS = ("adamw", "adafactor")
# What prompt design reads (toolbox/prompt_design.py): its data, model, examples and output; nothing it trains.
DESIGN_OPTIONS = ("model", "dtype", "device", "task", "train", "eval", "data_dir", "dev_fraction", "train_limit",
                  "template", "label_field", "labels", "verbalizer", "target_field", "target_template",
                  "references_field", "max_new_tokens", "chat", "shots", "seed", "max_length", "eval_batch_size",
                  "output", "progress")  # fmt: skip
DTYPE_HELP = (
    "base dtype: auto (bfloat16 where the CPU or GPU runs it natively, else float32 on a CPU and float16 on a GPU), "
    "float32, bfloat16, float16"
)


def option(default: Any, help: str, choices: Sequence[str] = ()) -> Any:
    """A config field that carries its CLI help text and, where the values are a closed set, its choices."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": tuple(choices)})


@dataclass
class TrainConfig:
    """Every `softprompt train` option; a TOML file holds the same keys (dashes or underscores)."""

    model: str = option(DEFAULT_MODEL, MODEL_HELP)  # the flag's help adds the default
    method: str = option(
        PROMPT_TUNING.name,
        "what trains: the prompt (prompt-tuning), or every weight of the model (model-tuning, the paper's upper "
        "baseline: float32, saves a Hugging Face model folder)",
        TRAINED,
    )
    dtype: str = option("auto", DTYPE_HELP + " (the prompt always trains in float32)", DTYPE_CHOICES)
    device: str = option("auto", DEVICE_HELP)
    task: str | None = option(
        None,
        "a shipped task: raft/twitter_complaints, glue/sst2, superglue/rte (files from --data-dir / $SOFTPROMPT_DATA)",
    )
    train: str | None = option(None, "labelled training file (.csv, .tsv, .jsonl) or hf:NAME[:CONFIG]:SPLIT")
    eval: str | None = option(
        None, "labelled file evaluated during training (else --dev-fraction carves one from --train)"
    )
    data_dir: str | None = option(
        None, "folder holding the shipped tasks' files (default $SOFTPROMPT_DATA, else the HF hub)"
    )
    dev_fraction: float = option(0.0, "carve this stratified fraction of the training rows out as the eval set")
    train_limit: int = option(0, "train on a stratified, seeded sample of about N training rows (0 = all)")
    template: str | None = option(
        None, 'input template with {field} placeholders, e.g. "Tweet text : {Tweet text} Label : "'
    )
    label_field: str | None = option(None, "column holding the label")
    labels: str | None = option(
        None, "comma-separated label values (default: those found in the training file; \\, escapes a comma)"
    )
    verbalizer: str | None = option(None, 'label value -> word, e.g. "0=negative,1=positive"')
    target_field: str | None = option(None, "text to text: the column the model learns to write (not a label)")
    target_template: str | None = option(None, 'text to text: the target written from fields, e.g. "{a} ({b})"')
    references_field: str | None = option(
        None, "text to text: a column with a JSON list of references to score against (default: the target)"
    )
    max_new_tokens: int | None = option(
        None, "tokens generated, and a target's budget (default: the task's, else 64; classification: its labels')"
    )
    chat: bool = option(False, "render each input as a user message through the model's chat template (the "
                        "target is the assistant's reply); saved with the prompt, so eval and serve render alike")
    num_virtual_tokens: int = option(8, "number of prompt vectors (with --init prompt-design: the examples' tokens)")
    init: str | None = option(
        None,  # text when the task has an init text, else class-label (the paper's default)
        "random-uniform | first-vocab | sampled-vocab | text | class-label | prompt-design (start from --shots "
        "training examples written out, as `design` makes them) (default: text when there is an init text, "
        "else class-label)",
        (*INITS, DESIGN_INIT),
    )
    init_from: str | None = option(
        None, "start from this prompt folder's trained vectors (their number, not --num-virtual-tokens): go on "
        "training a prompt, e.g. on new rows"
    )
    shots: int = option(4, "training examples in a prompt-design prompt (`design`, `compare`, --init prompt-design)")
    init_text: str | None = option(None, "text for --init text (default: the task's)")
    init_range: float = option(0.5, "half-width of the random-uniform init")
    optimizer: str = option(
        "adamw", "adamw (seed recipe, lr 3e-2, linear schedule) or adafactor (paper, lr 0.3, constant)", OPTIMIZERS
    )
    lr: float | None = option(
        None, "learning rate (default: 3e-2 for adamw, 0.3 for adafactor; model-tuning: 3e-5 and 1e-3)"
    )
    weight_decay: float | None = option(None, "weight decay (default: 0.01 for adamw, 1e-5 for adafactor)")
    warmup_steps: int = option(0, "linear warmup steps (adamw)")
    epochs: int = option(50, "passes over the training rows")
    max_steps: int = option(0, "stop after this many optimizer steps (overrides --epochs)")
    batch_size: int = option(8, "rows per micro-batch")
    eval_batch_size: int = option(32, "rows per evaluation batch")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    max_grad_norm: float = option(0.0, "clip the prompt's gradient norm (0 = off)")
    max_length: int | None = option(
        None, "max tokens of input + label or target (default: the task's, else 64 for the input beside the label or "
        "target); the input is cut first"
    )
    eval_every: int = option(0, "evaluate every N steps (0 = each epoch)")
    keep_best: str | None = option(
        None, "keep the prompt with the best eval loss, accuracy or macro_f1 (text to text: exact_match, f1, rougeL, "
        "bleu, from greedy decoding)", METRICS,
    )
    patience: int = option(0, "with --keep-best, stop after N evaluations without improvement")
    save_steps: int = option(0, "also checkpoint every N steps (always at each epoch end)")
    bucket: bool = option(False, "batch rows of similar length together (less padding)")
    gradient_checkpointing: bool = option(
        False, "recompute activations in the backward pass (long inputs, less memory)"
    )
    shard_base: bool = option(
        False, "under torchrun: shard the frozen base's blocks over the processes (FSDP2); the prompt is replicated"
    )
    seed: int = option(42, "seed for init, dev split and batch order: same seed, same prompt")
    output: str = option(
        "runs/prompt", "output folder: the prompt (PEFT format), metrics.jsonl, curves.png, checkpoints/"
    )
    progress: bool = option(True, "show a progress bar")
    report_to: str = option(
        "none",
        "also log metrics.jsonl's scalars to TensorBoard (output/tensorboard; needs softprompt[tensorboard])",
        REPORT_TO,
    )

    @classmethod
    def from_dict(cls, data: dict, source: str) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in known:
                raise SoftpromptError(f"{source}: unknown key {key!r}")
            values[name] = value
        return cls(**values)

    def total_steps(self, rows: int) -> int:
        """The optimizer steps a run over `rows` training rows takes."""
        return self.max_steps or self.epoch_steps(rows) * self.epochs

    def epoch_steps(self, rows: int) -> int:
        return math.ceil(math.ceil(rows / self.batch_size) / self.grad_accum)

    @property
    def trained_method(self) -> Method:
        return method_named(self.method)

    def validate(self) -> None:
        """Fail on what is wrong before any data or model loads."""
        for field in dataclasses.fields(self):
            value, choices = getattr(self, field.name), field.metadata["choices"]
            if choices and value is not None and value not in choices:
                raise ParameterError.not_one_of(field.name, value, choices)
        check_installed(self.report_to)
        resolve_device(self.device)  # a GPU asked for on a machine without one: one line, before anything loads
        if self.shard_base and self.trained_method.trains_model:
            raise ParameterError("shard_base", "shards a frozen base; {method} model-tuning trains every weight")
        if (self.task is None) == (self.train is None):
            raise ParameterError("task", "give exactly one of {task} (a shipped task) or {train} (a file)")
        if self.train_limit < 0:
            raise ParameterError("train_limit", "must be 0 (all rows) or positive")
        if self.max_steps < 0:
            raise ParameterError("max_steps", "must be 0 (the epochs decide) or positive")
        for name in ("epochs", "batch_size", "grad_accum", "max_length", "max_new_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ParameterError(name, "must be at least 1")
        if self.init == DESIGN_INIT and self.shots < 1:
            raise ParameterError("shots", "{init} prompt-design needs at least 1 example, got {n}", n=self.shots)


def check_metric(metric: str | None, task) -> None:
    """A metric to select by that the task reports: accuracy and macro_f1 for classification, a generation
    metric for a text-to-text task, loss for both."""
    if metric in (TEXT_METRICS if not task.generates else CLASSIFICATION_METRICS):
        kind = "a text-to-text" if task.generates else "a classification"
        allowed = ("loss", *(TEXT_METRICS if task.generates else CLASSIFICATION_METRICS))
        raise ParameterError("keep_best", "{metric} is not reported for {kind} task (choose from {allowed})",
                             metric=metric, kind=kind, allowed=", ".join(allowed))  # fmt: skip
