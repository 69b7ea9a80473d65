"""ServeConfig: every `softprompt serve` option once, with its help text, default and choices.

The CLI's serve flags are generated from it (cli/parser.py), `server.build` and `ray_engine.application` take
it, and Ray's `serve run ...:app_builder key=value` reads it with `from_dict`, so an option means the same
everywhere and its default is written here alone. Light on purpose: the CLI imports it for every command.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from ..models.base import DEFAULT_MODEL, MODEL_HELP
from ..training.train_config import DTYPE_HELP, option
from ..utils.errors import ParameterError, SoftpromptError
from ..utils.hardware import DEVICE_HELP, DTYPE_CHOICES

ENGINES = ("single", "ray")
# `serve --engine ray`'s own options (the CLI shows them in a group of their own).
REPLICA_OPTIONS = ("engine", "replicas", "held_tasks", "request_timeout", "gpus_per_replica", "cpus_per_replica")
SERVING_AUTO = "; a server on a CPU without AMX takes float32 (faster at small batches)"
AT_LEAST_1 = ("max_batch", "max_queue", "max_items", "max_input_tokens", "max_new_tokens", "max_body_bytes",
              "max_upload_bytes", "replicas", "held_tasks", "max_training_jobs", "train_every", "max_file_bytes",
              "max_file_rows", "max_job_steps")  # fmt: skip
WORDS = {int: "an integer", float: "a number", bool: "true or false"}


@dataclass(kw_only=True)
class ServeConfig:
    """Every `softprompt serve` option; `app_builder` takes the same names as key=value."""

    model: str = option(DEFAULT_MODEL, MODEL_HELP)
    prompts: str = option(dataclasses.MISSING, "folder of prompt folders; each folder's name is a task")
    dtype: str = option("auto", DTYPE_HELP + SERVING_AUTO, DTYPE_CHOICES)
    device: str = option("auto", DEVICE_HELP)
    host: str = option("127.0.0.1", "address to listen on")
    port: int = option(8000, "port to listen on")
    max_batch: int = option(32, "rows per model forward")
    max_wait_ms: float = option(5.0, "how long a batch waits for more requests")
    max_queue: int = option(1024, "waiting requests before 503")
    batching: bool = option(True, "merge concurrent requests into one forward")
    max_items: int = option(64, "inputs per request")
    max_input_tokens: int = option(512, "tokens per input")
    max_new_tokens: int = option(256, "largest max_tokens for completions")
    max_body_bytes: int = option(2**20, "largest request body")
    max_upload_bytes: int = option(32 * 2**20, "largest task upload (PUT /v1/tasks/NAME)")
    admin_token_file: str | None = option(None, "enables PUT/DELETE /v1/tasks/NAME with this bearer token")
    api_key_file: str | None = option(
        None, "every route needs 'Authorization: Bearer KEY' with this key (admin routes: the token)"
    )
    max_training_jobs: int = option(1, "fine-tuning jobs trained at once (steps in turn); the others wait")
    train_every: int = option(
        8, "while requests keep waiting, a fine-tuning job takes one short unit (a micro-batch's forward or backward) "
        "after every N batches (when none waits for 20 ms, one unit after another)"
    )
    max_file_bytes: int = option(16 * 2**20, "largest fine-tuning file (POST /v1/files)")
    max_file_rows: int = option(100_000, "rows a fine-tuning file may hold")
    max_job_steps: int = option(5000, "optimizer steps a fine-tuning job may take")
    console: bool = option(True, "the web console at / (tasks, try an input, live traffic, admin uploads)")
    open_health_metrics: bool = option(False, "with --api-key-file: /healthz and /metrics need no key")
    vllm_url: str | None = option(
        None,
        "generate completions on this vLLM server (started with --enable-prompt-embeds, same base model); "
        "classification stays here",
    )
    engine: str = option(
        "single",
        "single: one process; ray: --replicas copies behind Ray Serve, requests routed by task "
        "(pip install 'softprompt[ray]'; joins the cluster at RAY_ADDRESS if set, else starts a local one)",
        ENGINES,
    )
    replicas: int = option(2, "with --engine ray: copies of the model")
    held_tasks: int = option(16, "with --engine ray: tasks a replica holds (least recently used go)")
    request_timeout: float = option(60.0, "with --engine ray: seconds before a 503 for a replica")
    gpus_per_replica: float = option(
        0.0, "with --engine ray: GPUs Ray reserves for each replica (fractions share a GPU: 0.5 puts two on one)"
    )
    cpus_per_replica: float | None = option(
        None,
        "with --engine ray: CPU cores Ray reserves for each replica, and its torch threads (default: a local "
        "cluster's cores split over the replicas; 1 on an existing cluster)",
    )

    @classmethod
    def from_dict(cls, data: dict, source: str) -> ServeConfig:
        """The config from {name: value} (dashes or underscores), where a string value (`app_builder`'s
        key=value) is read as its field's type; an unknown key, a missing one or a bad value is one line."""
        fields = {field.name: field for field in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise SoftpromptError(f"{source}: unknown key {key!r} (the keys are `softprompt serve`'s options)")
            values[name] = _read(value, hints[name], f"{source}: {key}={value}")
        for name, field in fields.items():
            if field.default is dataclasses.MISSING and name not in values:
                raise SoftpromptError(f"{source}: give {name}=... ({field.metadata['help']})")
        return cls(**values)

    def validate(self) -> None:
        """Fail on a value out of its range before any model loads, naming the option."""
        for field in dataclasses.fields(self):
            value, choices = getattr(self, field.name), field.metadata["choices"]
            if choices and value not in choices:
                raise ParameterError.not_one_of(field.name, value, choices)
        for name in AT_LEAST_1:
            if getattr(self, name) < 1:
                raise ParameterError(name, "must be at least 1")
        for name in ("max_wait_ms", "gpus_per_replica"):
            if getattr(self, name) < 0:
                raise ParameterError(name, "must be 0 or more")
        for name in ("request_timeout", "cpus_per_replica"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ParameterError(name, "must be more than 0")
        if not 0 <= self.port <= 65535:
            raise ParameterError("port", "must be 0 to 65535 (0: any free port)")


def field_type(hint: object) -> type:
    """int for `int`, float for `float | None`: what a field's text (a flag, a key=value) is read as."""
    return next((arg for arg in typing.get_args(hint) if arg is not type(None)), hint)


def _read(value: object, hint: object, where: str) -> object:
    """`value` as the field's type when it is a string for a number or a flag; any other value as it is."""
    kind = field_type(hint)
    if not isinstance(value, str) or kind is str:
        return value
    if kind is bool:
        if value.lower() not in ("true", "false"):
            raise SoftpromptError(f"{where}: give {WORDS[bool]}")
        return value.lower() == "true"
    try:
        return kind(value)
    except ValueError:
        raise SoftpromptError(f"{where}: give {WORDS[kind]}") from None
