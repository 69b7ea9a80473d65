"""The training loop: config -> data -> prompt -> steps, evaluation, checkpoints, metrics.jsonl, curves.png.

Two recipes: the seed's (AdamW + linear schedule with warmup) and the paper's (Adafactor, constant
lr 0.3, weight decay 1e-5, beta2 decay 0.8). Batch order depends only on (seed, epoch), and every
checkpoint holds optimizer, scheduler and RNG state, so `--resume` ends on the same prompt, bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from . import checkpoint, hardware
from .batching import chunks
from .distributed import DataParallel
from .errors import ParameterError, SoftpromptError
from .models import DEFAULT_MODEL, load_base
from .plots import plot_curves
from .prompt import init_prompt
from .tasks import Row, Task, labels_found, load_named, parse_labels, parse_mapping, read_rows, split_dev
from .tuned import TunedPrompt, prompted

METRICS = ("loss", "accuracy", "macro_f1")


@dataclass
class TrainConfig:
    """Every `softprompt train` option; a TOML file holds the same keys (dashes or underscores)."""

    model: str = DEFAULT_MODEL
    dtype: str = "auto"
    task: str | None = None
    train: str | None = None
    eval: str | None = None
    data_dir: str | None = None
    dev_fraction: float = 0.0
    train_limit: int = 0
    template: str | None = None
    label_field: str | None = None
    labels: str | None = None
    verbalizer: str | None = None
    num_virtual_tokens: int = 8
    init: str | None = None  # text when the task has an init text, else class-label (the paper's default)
    init_text: str | None = None
    init_range: float = 0.5
    optimizer: str = "adamw"
    lr: float | None = None
    weight_decay: float | None = None
    warmup_steps: int = 0
    epochs: int = 50
    max_steps: int = 0
    batch_size: int = 8
    eval_batch_size: int = 32
    grad_accum: int = 1
    max_grad_norm: float = 0.0
    max_length: int = 64
    eval_every: int = 0
    keep_best: str | None = None
    patience: int = 0
    save_steps: int = 0
    bucket: bool = False
    gradient_checkpointing: bool = False
    seed: int = 42
    output: str = "runs/prompt"
    progress: bool = True

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

    def validate(self) -> None:
        if self.optimizer not in ("adamw", "adafactor"):
            raise ParameterError.not_one_of("optimizer", self.optimizer, ("adamw", "adafactor"))
        if self.dtype not in hardware.DTYPE_CHOICES:
            raise ParameterError.not_one_of("dtype", self.dtype, hardware.DTYPE_CHOICES)
        if self.keep_best not in (None, *METRICS):
            raise ParameterError.not_one_of("keep_best", self.keep_best, METRICS)
        if (self.task is None) == (self.train is None):
            raise ParameterError("task", "give exactly one of {task} (a shipped task) or {train} (a file)")
        if self.train_limit < 0:
            raise ParameterError("train_limit", "must be 0 (all rows) or positive")
        for name in ("batch_size", "grad_accum", "max_length"):
            if getattr(self, name) < 1:
                raise ParameterError(name, "must be at least 1")


def load_data(config: TrainConfig) -> tuple[Task, list[Row], list[Row] | None]:
    """The task and its training rows, plus evaluation rows from --eval or a dev split carved from train."""
    data_dir = Path(config.data_dir) if config.data_dir else None
    if config.task:
        task, rows, source = load_named(config.task, "train", data_dir)
        if config.template:
            task.template = config.template
    else:
        if not config.template or not config.label_field:
            raise ParameterError("train", "needs {template} and {label_field}")
        source, rows = config.train, read_rows(config.train)
        labels = parse_labels(config.labels) if config.labels else labels_found(rows, config.label_field, source)
        verbalizer = parse_mapping(config.verbalizer, "verbalizer") if config.verbalizer else {}
        task = Task(config.template, config.label_field, labels, verbalizer, name=Path(source).stem)
    task.check(rows, source)
    if config.train_limit and config.train_limit < len(rows):
        # A stratified subset, so a large training set (SST-2's 67k rows) can run as a few-shot task.
        _, rows = split_dev(rows, config.train_limit / len(rows), config.seed, task.label_field)
    eval_rows = None
    if config.eval:
        eval_rows = read_rows(config.eval)
        task.check(eval_rows, config.eval)
    elif config.dev_fraction:
        rows, eval_rows = split_dev(rows, config.dev_fraction, config.seed, task.label_field)
    return task, rows, eval_rows


def make_optimizer(config: TrainConfig, params, total_steps: int):
    """(optimizer, scheduler) for the chosen recipe."""
    if config.optimizer == "adafactor":
        lr = 0.3 if config.lr is None else config.lr
        decay = 1e-5 if config.weight_decay is None else config.weight_decay
        optimizer = torch.optim.Adafactor(params, lr=lr, weight_decay=decay, beta2_decay=-0.8)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    lr = 3e-2 if config.lr is None else config.lr
    decay = 0.01 if config.weight_decay is None else config.weight_decay
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=decay)
    warmup = config.warmup_steps

    def linear(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, linear)


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, bucket: bool) -> list[list[int]]:
    """Row indices per micro-batch for one epoch, a function of (seed, epoch) alone, so a resumed run sees
    the same batches. With `bucket`, rows of similar length share a batch (sorted within windows of 50
    batches, then the batches shuffled), which cuts padding."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if bucket:
        window = batch_size * 50
        order = [
            i
            for start in range(0, len(order), window)
            for i in sorted(order[start : start + window], key=lengths.__getitem__)
        ]
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if bucket:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


class Trainer:
    """Holds one run's state; `run()` trains to the end or to early stopping."""

    def __init__(self, config: TrainConfig, base=None) -> None:
        config.validate()
        self.config = config
        self.output = Path(config.output)
        self.task, self.train_rows, self.eval_rows = load_data(config)
        model, tokenizer = base or load_base(config.model, config.dtype)
        init_text = config.init_text or self.task.init_text
        init = config.init or ("text" if init_text else "class-label")
        prompt = init_prompt(
            config.num_virtual_tokens,
            model.get_input_embeddings(),
            tokenizer,
            init,
            seed=config.seed,
            init_text=init_text,
            label_words=self.task.label_words,
            init_range=config.init_range,
        )
        meta = {
            "init": init,
            "init_text": init_text,
            "seed": config.seed,
            "train_config": dataclasses.asdict(config),
            "base_dtype": str(model.dtype).removeprefix("torch."),  # what `auto` chose on this machine
            "hardware": hardware.describe(),
        }
        self.tuned = TunedPrompt(prompted(model, prompt), tokenizer, self.task, config.max_length, meta)
        self.encoded = [
            (self.tuned.encoder.input_ids(row), self.tuned.encoder.label_ids[self.task.label_index(row)])
            for row in self.train_rows
        ]
        # The prompt changes between dev evaluations, so keys/values computed apart would never be reused: a dev
        # set that fits one forward runs the prompt inside it instead (`_finish` turns this off again).
        self.tuned.lm.prompt_in_forward = len(self.eval_rows or ()) <= config.eval_batch_size
        self.parallel = DataParallel()
        if config.gradient_checkpointing:
            # Recompute activations in the backward pass; the prompt cache needs `use_cache`, which
            # checkpointing turns off, so this runs the plain (concatenating) path.
            model.gradient_checkpointing_enable()
            self.tuned.lm.share_prompt_cache = False
        micro_batches = math.ceil(len(self.encoded) / config.batch_size)
        self.steps_per_epoch = math.ceil(micro_batches / config.grad_accum)
        self.total_steps = config.max_steps or self.steps_per_epoch * config.epochs
        self.optimizer, self.scheduler = make_optimizer(config, [prompt.embedding], self.total_steps)
        self.progress = {
            "config": dataclasses.asdict(config),
            "step": 0,
            "epoch": 0,
            "batch": 0,
            "best": None,
            "bad_evals": 0,
            "window_loss": 0.0,
            "window_tokens": 0,
            "logged": 0,  # metrics.jsonl records written so far: a resumed run drops any later ones
        }

    def resume(self, folder: Path) -> None:
        prompt, self.progress = checkpoint.load_state(folder, self.optimizer, self.scheduler)
        with torch.no_grad():
            self.tuned.lm.prompt.embedding.copy_(prompt)
        metrics = self.output / "metrics.jsonl"
        if metrics.is_file() and self.parallel.main:  # drop what the killed run logged after its last checkpoint
            lines = metrics.read_text().splitlines()[: self.progress["logged"]]
            checkpoint.atomic_write(metrics, "".join(line + "\n" for line in lines).encode())

    def _log(self, record: dict) -> None:
        with open(self.output / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.progress["logged"] += 1

    def _train_step(self, batch_items) -> None:
        """One optimizer step over `grad_accum` micro-batches."""
        lm = self.tuned.lm
        tokens = sum(len(target) for items in batch_items for _, target in items)  # over the global batch
        loss_total = 0.0
        for items in batch_items:
            items = self.parallel.shard(items)
            if not items:
                continue
            loss_sum = -lm.target_logprob_sum([i for i, _ in items], [t for _, t in items]).sum()
            (loss_sum / tokens).backward()
            loss_total += loss_sum.item()
        embedding = lm.prompt.embedding
        if self.parallel.world > 1:
            if embedding.grad is None:
                embedding.grad = torch.zeros_like(embedding)
            self.parallel.sum(embedding.grad)
            loss_total = float(self.parallel.sum(torch.tensor([loss_total], dtype=torch.float64)))
        if not math.isfinite(loss_total):
            raise self._diverged(f"loss {loss_total}")
        self.progress["window_loss"] += loss_total
        self.progress["window_tokens"] += tokens
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_([lm.prompt.embedding], self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(lm.prompt.embedding).all():
            raise self._diverged("NaN/Inf in the prompt")

    def _diverged(self, what: str) -> ParameterError:
        return ParameterError(
            "lr",
            "training diverged at step {step} ({what}); the last good checkpoint is kept under {folder}; "
            "try a lower value",
            step=self.progress["step"] + 1,
            what=what,
            folder=str(self.output / "checkpoints"),
        )

    def _evaluate(self) -> bool:
        """Log train/eval metrics (main process); True, on every process, when early stopping ends the run."""
        progress = self.progress
        record = {"step": progress["step"], "epoch": progress["epoch"], "lr": self.scheduler.get_last_lr()[0]}
        if progress["window_tokens"]:
            train_loss = progress["window_loss"] / progress["window_tokens"]
            record.update(train_loss=train_loss, train_ppl=math.exp(min(train_loss, 50.0)))
        progress["window_loss"], progress["window_tokens"] = 0.0, 0
        return self.parallel.decide(self._evaluate_and_log(record) if self.parallel.main else False)

    def _evaluate_and_log(self, record: dict) -> bool:
        progress, config = self.progress, self.config
        stop = False
        if self.eval_rows:
            result = self.tuned.evaluate(self.eval_rows, config.eval_batch_size)
            record.update(
                eval_loss=result["loss"],
                eval_ppl=result["perplexity"],
                accuracy=result["accuracy"],
                macro_f1=result["macro_f1"],
            )
            if config.keep_best:
                value = result[config.keep_best]
                sign = -1 if config.keep_best == "loss" else 1
                if progress["best"] is None or sign * value > sign * progress["best"]:
                    progress["best"], progress["bad_evals"] = value, 0
                    self.tuned.save_pretrained(self.output / "best", metrics=result, step=progress["step"])
                else:
                    progress["bad_evals"] += 1
                    stop = bool(config.patience) and progress["bad_evals"] >= config.patience
        self._log(record)
        tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        return stop

    def _checkpoint(self) -> None:
        if not self.parallel.main:
            return
        files = checkpoint.state_files(self.tuned.lm.prompt.embedding, self.optimizer, self.scheduler, self.progress)
        checkpoint.save_checkpoint(self.output / "checkpoints", self.progress["step"], files)

    def run(self) -> TunedPrompt:
        config, progress = self.config, self.progress
        self.output.mkdir(parents=True, exist_ok=True)
        bar = tqdm(
            total=self.total_steps,
            initial=progress["step"],
            unit="step",
            disable=not (config.progress and self.parallel.main),
        )
        stop = progress["step"] >= self.total_steps
        lengths = [len(source) + len(target) for source, target in self.encoded]
        while not stop:
            batches = epoch_batches(lengths, config.batch_size, config.seed, progress["epoch"], config.bucket)
            micro = [[self.encoded[i] for i in batch] for batch in batches]
            steps = list(chunks(micro, config.grad_accum))
            for index in range(progress["batch"], len(steps)):
                self._train_step(steps[index])
                progress["step"] += 1
                progress["batch"] = index + 1
                bar.update(1)
                done = progress["step"] >= self.total_steps
                if config.eval_every and progress["step"] % config.eval_every == 0:
                    stop = self._evaluate()
                if config.save_steps and progress["step"] % config.save_steps == 0:
                    self._checkpoint()
                if done or stop:
                    stop = True
                    break
            if progress["batch"] == len(steps):
                progress["epoch"] += 1
                progress["batch"] = 0
                if not config.eval_every:
                    stop = self._evaluate() or stop
                self._checkpoint()
            elif progress["step"] >= self.total_steps:  # --max-steps ended the run mid-epoch: log and save it too
                if not (config.eval_every and progress["step"] % config.eval_every == 0):
                    self._evaluate()
                if not (config.save_steps and progress["step"] % config.save_steps == 0):
                    self._checkpoint()
        bar.close()
        return self._finish()

    def _finish(self) -> TunedPrompt:
        """Write the final prompt (the best one with --keep-best) and the curves."""
        self.tuned.lm.prompt_in_forward = False  # the prompt is final: later calls reuse its cached keys/values
        if not self.parallel.main:
            return self.tuned
        best = self.output / "best"
        if self.config.keep_best and (best / checkpoint.WEIGHTS).is_file():
            prompt, _, meta = checkpoint.load_prompt(best)
            with torch.no_grad():
                self.tuned.lm.prompt.embedding.copy_(prompt)
            self.tuned.meta.update(metrics=meta.get("metrics"), step=meta.get("step"))
        self.tuned.save_pretrained(self.output)
        plot_curves(self.output / "metrics.jsonl", self.output / "curves.png")
        return self.tuned


def resume_config(output: str | Path) -> TrainConfig:
    """The config a run in `output` was started with, read from its newest checkpoint."""
    folder = checkpoint.latest_checkpoint(Path(output) / "checkpoints")
    if folder is None:
        raise SoftpromptError(f"{output}: no checkpoint to resume from")
    state = json.loads((folder / checkpoint.STATE_JSON).read_text())
    return TrainConfig.from_dict(state["progress"]["config"], str(folder / checkpoint.STATE_JSON))


@contextlib.contextmanager
def output_lock(output: Path, take: bool = True):
    """Hold `output/.lock` for the run, so a second training pointed at the same folder refuses to start."""
    if not take:
        yield
        return
    output.mkdir(parents=True, exist_ok=True)
    with open(output / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SoftpromptError(f"{output}: another training run is using this folder") from None
        yield


def fit(config: TrainConfig, base=None, resume: bool = False, overwrite: bool = False) -> TunedPrompt:
    """Train a prompt as `config` says; with `resume`, continue from the newest checkpoint in config.output.

    A folder that already holds a run is only reused with `resume` (continue) or `overwrite` (start over).
    """
    trainer = Trainer(config, base)
    with output_lock(trainer.output, trainer.parallel.main):
        previous = checkpoint.latest_checkpoint(trainer.output / "checkpoints")
        if trainer.parallel.main:
            checkpoint.remove_partial(trainer.output / "checkpoints")
        if resume:
            if previous is None:
                raise SoftpromptError(f"{trainer.output}: no checkpoint to resume from")
            trainer.resume(previous)
        elif previous is not None or (trainer.output / "metrics.jsonl").exists():
            if not overwrite:
                raise ParameterError(
                    "output",
                    "{path} already holds a training run; pass {resume} to continue it, {overwrite} to start "
                    "over, or another {output}",
                    path=str(trainer.output),
                )
            if trainer.parallel.main:
                for name in ("checkpoints", "best"):
                    shutil.rmtree(trainer.output / name, ignore_errors=True)
                (trainer.output / "metrics.jsonl").unlink(missing_ok=True)
        return trainer.run()
