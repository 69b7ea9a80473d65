"""A fine-tuning job's request (OpenAI's fields, and ours in one `softprompt` object) -> the `TrainConfig` it runs.

OpenAI's hyperparameters map onto `softprompt train`'s options: `n_epochs` -> epochs, `batch_size` -> the batch
(in micro-batches of `MICRO_BATCH` rows, accumulated, unless the recipe sets `grad_accum`: the server runs a job
a micro-batch at a time between its batches), `learning_rate_multiplier` times prompt tuning's default learning
rate -> lr; "auto" leaves `train`'s default. The `softprompt` object takes `train`'s own recipe options by
their names (`RECIPE_FIELDS`): the template and label or target fields, the verbalizer, the prompt's length and
init, the optimiser, the step budget. A file's shape supplies what it implies: prompt/completion lines train
`{prompt}` -> completion, chat lines `{user}` -> assistant through the chat template (a `label_field` makes
either a classifier instead). The config written into the job is complete: `softprompt train` given it trains
the same prompt, bit for bit.
"""

from __future__ import annotations

import re
import typing
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..data.tasks import Task
from ..prompts.method import PROMPT_TUNING
from ..training.train_config import TrainConfig
from ..utils.errors import ParameterError, SoftpromptError
from .tuning_files import CHAT, PROMPT_COMPLETION, StoredFile

# `softprompt train`'s options a job may set in its `softprompt` object (the rest are the server's or OpenAI's).
RECIPE_FIELDS = ("template", "label_field", "labels", "verbalizer", "target_field", "target_template",
                 "references_field", "max_new_tokens", "chat", "num_virtual_tokens", "init", "init_text", "init_range",
                 "shots", "optimizer", "lr", "weight_decay", "warmup_steps", "max_steps", "grad_accum",
                 "max_grad_norm", "max_length", "eval_every", "keep_best", "patience", "save_steps", "bucket",
                 "dev_fraction", "train_limit", "eval_batch_size")  # fmt: skip
MICRO_BATCH = 2  # rows per forward and backward pass of a job (the batch is accumulated): what a request may wait
SAVE_STEPS = 10  # a job checkpoints this often unless its recipe says otherwise: what a restart resumes from
# Where an error about a TrainConfig option points in a job request.
SPELLED = {"epochs": "hyperparameters.n_epochs", "batch_size": "hyperparameters.batch_size", "train": "training_file",
           "eval": "validation_file", "seed": "seed"}  # fmt: skip
_hints = typing.get_type_hints(TrainConfig)
# The recipe object, typed from TrainConfig's own fields: a value of the wrong type or an unknown key is refused.
# Labels may come as a JSON list and a verbalizer as an object, as well as in the flags' comma-separated text.
_shapes = {name: (_hints[name] | None, None) for name in RECIPE_FIELDS}
_shapes.update(labels=(list[str] | str | None, None), verbalizer=(dict[str, str] | str | None, None))
Recipe = create_model("Recipe", __config__=ConfigDict(extra="forbid"), **_shapes)


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_epochs: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        "auto", description="passes over the rows (`train --epochs`)"
    )
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        "auto", description="rows per step (`train --batch-size`)"
    )
    learning_rate_multiplier: Annotated[float, Field(gt=0)] | Literal["auto"] | None = Field(
        "auto", description="times prompt tuning's default learning rate"
    )


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyperparameters | None = None


class JobMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["supervised"]
    supervised: Supervised | None = None


class JobRequest(BaseModel):
    """`POST /v1/fine_tuning/jobs`: OpenAI's fields, and `softprompt`, the recipe (the SDK's `extra_body`)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, description="the base this server runs")
    training_file: str
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = None
    method: JobMethod | None = None
    suffix: str | None = Field(None, max_length=40, pattern=r"^[A-Za-z0-9_.-]*$")
    seed: int | None = None
    metadata: dict[str, str] | None = None
    softprompt: Recipe | None = Field(None, description="`softprompt train`'s recipe options, by name")

    def chosen_hyperparameters(self) -> Hyperparameters:
        if self.hyperparameters and self.method and self.method.supervised:
            raise SoftpromptError("hyperparameters: give them in method.supervised or at the top, not both")
        inner = self.method.supervised if self.method and self.method.supervised else None
        return (inner.hyperparameters if inner else None) or self.hyperparameters or Hyperparameters()


def job_config(request: JobRequest, train: StoredFile, paths: tuple[str, str | None], serving: dict,
               start: dict | None = None) -> TrainConfig:  # fmt: skip
    """The TrainConfig a job runs: the file's shape's defaults (or, for a job that starts from a served task,
    `start`: the task's options and its prompt), the recipe, OpenAI's hyperparameters, and what the server
    decides (`serving`: model, dtype, device, output); `paths` are the stored training and validation rows."""
    recipe = request.softprompt.model_dump(exclude_none=True) if request.softprompt else {}
    if isinstance(recipe.get("labels"), list):
        recipe["labels"] = _joined(recipe["labels"])
    if isinstance(recipe.get("verbalizer"), dict):
        recipe["verbalizer"] = _joined_pairs(recipe["verbalizer"])
    hyper = request.chosen_hyperparameters()
    values = {**(start if start is not None else shape_defaults(train.shape, recipe)), **recipe}
    if hyper.learning_rate_multiplier not in (None, "auto"):
        if "lr" in recipe:
            raise SoftpromptError("hyperparameters.learning_rate_multiplier: give it or softprompt.lr, not both")
        base_lr = PROMPT_TUNING.lr[values.get("optimizer", TrainConfig.optimizer)]
        values["lr"] = base_lr * hyper.learning_rate_multiplier
    if hyper.n_epochs not in (None, "auto"):
        values["epochs"] = hyper.n_epochs
    if hyper.batch_size not in (None, "auto"):
        values["batch_size"] = hyper.batch_size
    batch = values.get("batch_size", TrainConfig.batch_size)
    if "grad_accum" not in recipe and batch >= 1:  # the batch in micro-batches: the server's units of work are short
        micro = max(size for size in range(1, MICRO_BATCH + 1) if batch % size == 0)
        values.update(batch_size=micro, grad_accum=batch // micro)
    values.setdefault("save_steps", SAVE_STEPS)
    seed = TrainConfig.seed if request.seed is None else request.seed
    config = TrainConfig(**values, **serving, train=paths[0], eval=paths[1], seed=seed, progress=False)
    try:
        config.validate()
    except ParameterError as exc:
        raise SoftpromptError(exc.spelled(spelled)) from None
    return config


def task_options(task: Task, max_length: int, prompt_folder: str) -> dict:
    """A served task as recipe options, and its prompt as the start: a job from it trains on rows like its own."""
    options = {"template": task.template, "chat": task.chat, "max_length": max_length, "init_from": prompt_folder}
    if task.max_new_tokens:
        options["max_new_tokens"] = task.max_new_tokens
    if task.generates:
        names = ("target_field", "target_template", "references_field")
        return {**options, **{name: getattr(task, name) for name in names if getattr(task, name)}}
    options.update(label_field=task.label_field, labels=_joined(task.labels))
    if task.verbalizer:
        options["verbalizer"] = _joined_pairs(task.verbalizer)
    return options


def _joined(items: list[str]) -> str:
    """Items as `--labels` takes them: comma-separated, their own commas kept (label_options.py's escaping)."""
    return ",".join(item.replace("\\", "\\\\").replace(",", "\\,") for item in items)


def _joined_pairs(mapping: dict[str, str]) -> str:
    """A mapping as `--verbalizer` takes it: VALUE=WORD pairs, comma-separated."""
    return _joined([f"{key}={value}" for key, value in mapping.items()])


def shape_defaults(shape: str, recipe: dict) -> dict:
    """What a file's shape says about the task unless the recipe says otherwise."""
    classify = "label_field" in recipe or "labels" in recipe
    if shape == PROMPT_COMPLETION:
        return {"template": "{prompt}", **({} if classify else {"target_field": "completion"})}
    if shape == CHAT:
        return {"template": "{user}", "chat": True, **({} if classify else {"target_field": "assistant"})}
    if "template" not in recipe:
        raise SoftpromptError("softprompt.template: a file of rows needs the template that renders them")
    return {}


def spelled(name: str) -> str:
    """A TrainConfig option as a job request names it."""
    return SPELLED.get(name, f"softprompt.{name}")


def task_name(base: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's `ft:BASE:SUFFIX:ID`, spelled as a task name may be (`ft-BASE-SUFFIX-ID`: no colons)."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", base.rsplit("/", 1)[-1]).strip("-.")[:24]
    parts = ["ft", base, (suffix or "")[:20], job_id[-8:]]  # at most 57 characters; the id's random end
    return re.sub(r"\.{2,}", ".", "-".join(part for part in parts if part))

