"""The training loop: config -> run folder -> data -> prompt (or model) -> steps, evaluation, checkpoints, curves.

`fit` checks the run folder (run_folder.py) before anything loads, builds a Trainer from the config's data and
model, and runs it; after each optimizer step one rule (schedule.py) says whether to evaluate, checkpoint or
stop. The optimizer and the batch order (recipe.py) depend only on the config and the seed, and every
checkpoint holds optimizer, scheduler and RNG state, so `--resume` ends on the same prompt, bit for bit.
What is trained (the prompt, or every weight with `--method model-tuning`) comes from methods.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.batching import chunks
from ..data.loading import load_data
from ..data.tasks import Row
from ..engine.prompted import ScoringMode
from ..models.base import Base
from ..prompts import checkpoint
from ..prompts.model_card import write_card
from ..prompts.plots import plot_curves
from ..prompts.tuned import TunedPrompt
from ..utils.errors import ParameterError
from ..utils.hardware import resolve_device
from .distributed import DataParallel
from .methods import load_trained, make_tuned
from .recipe import epoch_batches, make_optimizer
from .reporting import open_reporter
from .run_folder import RunFolder, Start
from .schedule import Due, Plan, Progress, after_step
from .train_config import METRICS, TEXT_METRICS, TrainConfig, check_metric

__all__ = ["METRICS", "TrainConfig", "Trainer", "fit", "fit_steps", "make_tuned", "resume_config"]


class Trainer:
    """One run's state; `run()` trains to the end or to early stopping. `Trainer.build` sets it up from a config."""

    def __init__(
        self,
        config: TrainConfig,
        tuned: TunedPrompt,
        train_rows: list[Row],
        eval_rows: list[Row] | None,
        folder: RunFolder,
        parallel: DataParallel,
        resume_from: Path | None = None,
    ) -> None:
        """The run set up, from its start or (`resume_from`) from a checkpoint: optimizer, scheduler, RNG,
        progress and what is trained restored, and the metrics reporter opened at that step."""
        self.config, self.tuned, self.folder, self.parallel = config, tuned, folder, parallel
        self.train_rows, self.eval_rows = train_rows, eval_rows
        encoder = tuned.encoder
        self.encoded = [(encoder.input_ids(row), encoder.target_ids(row)) for row in train_rows]
        cut = encoder.targets_cut(train_rows)
        if cut and parallel.main:
            tqdm.write(f"{cut} of {len(train_rows)} training targets cut to their first {encoder.max_new_tokens} "
                       "tokens (--max-new-tokens)")  # fmt: skip
        total_steps = config.total_steps(len(self.encoded))
        self.plan = Plan(config.epoch_steps(len(self.encoded)), total_steps, config.eval_every, config.save_steps)
        self.trained = tuned.record.method.trained_tensors(tuned.lm)  # the prompt, or every weight
        self.optimizer, self.scheduler = make_optimizer(config, list(self.trained.values()), total_steps)
        self.progress = Progress(config=dataclasses.asdict(config))
        self.step_loss: float | None = None  # the last optimizer step's mean loss per target token
        # The prompt changes between dev evaluations, so keys/values computed apart would never be reused: a dev
        # set that fits one forward runs the prompt inside it instead.
        fits = len(eval_rows or ()) <= config.eval_batch_size
        self.eval_mode = ScoringMode.PACKED_INLINE if fits and tuned.lm.mode is ScoringMode.PACKED else None
        if resume_from is not None:
            self._resume(resume_from)
        self.started = time.perf_counter() - self.progress.seconds  # a resumed run counts its earlier parts
        self.folder.path.mkdir(parents=True, exist_ok=True)
        self.reporter = open_reporter(config.report_to, folder.path, self.progress.step) if parallel.main else None

    @classmethod
    def build(
        cls,
        config: TrainConfig,
        base: Base | None = None,
        folder: RunFolder | None = None,
        parallel: DataParallel | None = None,
        start: Start | None = None,
    ) -> Trainer:
        """Load the data and the model (unless `base` is given) and make the prompt the config asks for; then, as
        `start` says, clear the folder's previous run (only now, so a run that cannot start leaves it whole) or
        resume from its checkpoint."""
        task, train_rows, eval_rows = load_data(config)
        check_metric(config.keep_best, task)  # before the model loads, and before the folder is cleared
        tuned = make_tuned(config, task, train_rows, base)
        parallel = parallel or DataParallel(resolve_device(config.device))
        if config.shard_base:
            parallel.shard_blocks(tuned.lm.model)
        folder = folder or RunFolder(config.output, parallel.main)
        if start is not None and start.clear:
            folder.clear()
        resume_from = start.resume_from if start is not None else None
        return cls(config, tuned, train_rows, eval_rows, folder, parallel, resume_from)

    def _resume(self, folder: Path) -> None:
        trained, progress = checkpoint.load_state(folder, self.optimizer, self.scheduler)
        self.progress = Progress.from_json(progress)
        with torch.no_grad():
            for name, tensor in trained.items():
                self.trained[name].copy_(tensor)
        self.folder.keep_records(self.progress.logged)

    def _train_step(self, batch_items) -> Iterator[None]:
        """One optimizer step over `grad_accum` micro-batches, pausing after each one's forward and backward pass
        (a server's units of training, short so that a request waits little)."""
        lm = self.tuned.lm
        tokens = sum(len(target) for items in batch_items for _, target in items)  # over the global batch
        loss_total = 0.0
        for batch in batch_items:
            items, weight = self.parallel.shard(batch), 1.0
            if not items:
                if not self.config.shard_base:
                    continue
                items, weight = batch[:1], 0.0  # a sharded block's forward needs every process: a row at weight 0
            loss_sum = -lm.target_logprob_sum([i for i, _ in items], [t for _, t in items]).sum() * weight
            yield
            (loss_sum / tokens).backward()
            loss_total += loss_sum.item()
            yield
        params = list(self.trained.values())
        if self.parallel.world > 1:
            for param in params:
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
                self.parallel.sum(param.grad)
            loss_total = float(self.parallel.sum(torch.tensor([loss_total], dtype=torch.float64,
                                                              device=self.parallel.device)))  # fmt: skip
        if not math.isfinite(loss_total):
            raise self._diverged(f"loss {loss_total}")
        self.step_loss = loss_total / tokens  # what a server's job reports for each step
        self.progress.window_loss += loss_total
        self.progress.window_tokens += tokens
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not all(torch.isfinite(param).all() for param in params):
            raise self._diverged("NaN/Inf in the prompt")

    def _diverged(self, what: str) -> ParameterError:
        return ParameterError(
            "lr",
            "training diverged at step {step} ({what}); the last good checkpoint is kept under {folder}; "
            "try a lower value",
            step=self.progress.step + 1,
            what=what,
            folder=str(self.folder.checkpoints),
        )

    def _carry_out(self, due: Due) -> bool:
        """Do what the after-step rule says; True when the run ends (its last step, or early stopping)."""
        if due.epoch_end:
            self.progress.epoch += 1
            self.progress.batch = 0
        stop = self._evaluate(due.log_epoch) if due.evaluate else False
        if due.checkpoint:
            self._checkpoint()
        return due.stop or stop

    def _evaluate(self, epoch: int) -> bool:
        """Log train/eval metrics (main process); True, on every process, when early stopping ends the run."""
        progress = self.progress
        record = {"step": progress.step, "epoch": epoch, "lr": self.scheduler.get_last_lr()[0]}
        if progress.window_tokens:
            train_loss = progress.window_loss / progress.window_tokens
            record.update(train_loss=train_loss, train_ppl=math.exp(min(train_loss, 50.0)))
        progress.window_loss, progress.window_tokens = 0.0, 0
        # The main process evaluates; with a sharded base every process runs the forwards with it.
        scoring = self.eval_rows and (self.parallel.main or self.config.shard_base)
        generate = self.config.keep_best in TEXT_METRICS  # a text task decodes only to select by what it writes
        result = self.tuned.evaluate(self.eval_rows, self.config.eval_batch_size, mode=self.eval_mode, by_label=True,
                                     generate=generate) if scoring else None  # fmt: skip
        return self.parallel.decide(self._log_evaluation(record, result) if self.parallel.main else False)

    def _log_evaluation(self, record: dict, result: dict | None) -> bool:
        progress, config = self.progress, self.config
        stop = False
        if result is not None:
            record.update(eval_loss=result["loss"], eval_ppl=result["perplexity"])
            record.update({name: result[name] for name in METRICS if name in result and name != "loss"})
            if config.keep_best:
                value = result[config.keep_best]
                sign = -1 if config.keep_best == "loss" else 1
                if progress.best is None or sign * value > sign * progress.best:
                    progress.best, progress.bad_evals = value, 0
                    self.tuned.save_pretrained(self.folder.best, metrics=result, step=progress.step)
                else:
                    progress.bad_evals += 1
                    stop = bool(config.patience) and progress.bad_evals >= config.patience
        self.folder.log(record)
        if self.reporter is not None:
            self.reporter.log(record)
        progress.logged += 1
        tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        return stop

    def _checkpoint(self) -> None:
        progress = self.progress
        progress.seconds = time.perf_counter() - self.started
        if self.parallel.main:
            files = checkpoint.state_files(self.trained, self.optimizer, self.scheduler, progress.to_json())
            self.folder.save_checkpoint(progress.step, files)

    def run(self) -> TunedPrompt:
        for _ in self.steps():
            pass
        return self.tuned

    def steps(self) -> Iterator[int | None]:
        """The run in short pieces: None after each micro-batch's forward and backward, the step's number after
        each optimizer step and what follows it; the final folder is written when the iteration ends."""
        config, progress = self.config, self.progress
        bar = tqdm(total=self.plan.total_steps, initial=progress.step, unit="step",
                   disable=not (config.progress and self.parallel.main))  # fmt: skip
        done = progress.step >= self.plan.total_steps
        if not done and progress.batch == self.plan.epoch_steps:
            # A checkpoint from before the after-step rule, saved between an epoch's last step and its close:
            # the step's own evaluation and save are done; the epoch's close is still owed.
            done = self._carry_out(after_step(progress, self.plan, close_only=True))
        lengths = [len(source) + len(target) for source, target in self.encoded]
        while not done:
            batches = epoch_batches(lengths, config.batch_size, config.seed, progress.epoch, config.bucket)
            steps = list(chunks([[self.encoded[i] for i in batch] for batch in batches], config.grad_accum))
            for items in steps[progress.batch :]:
                yield from self._train_step(items)
                progress.step += 1
                progress.batch += 1
                bar.update(1)
                done = self._carry_out(after_step(progress, self.plan))
                yield progress.step
                if done:
                    break
        bar.close()
        self._finish()

    def _finish(self) -> None:
        """Write the final prompt (the best one with --keep-best), the curves and the model card."""
        if not self.parallel.main:
            return
        if self.config.keep_best and (self.folder.best / checkpoint.META).is_file():
            best = load_trained(self.folder.best, self.tuned)
            self.tuned.record.metrics, self.tuned.record.step = best.metrics, best.step
        self.tuned.save_pretrained(self.folder.path, train_seconds=round(time.perf_counter() - self.started, 1))
        plot_curves(self.folder.metrics, self.folder.path / "curves.png")
        write_card(self.folder.path)
        if self.reporter is not None:
            self.reporter.close()


def resume_config(output: str | Path) -> TrainConfig:
    """The config a run in `output` was started with, read from its newest checkpoint, writing to `output`: the
    run goes on where its folder is now (moved, or parked and brought back)."""
    folder = RunFolder(output).resume_point()
    state = json.loads((folder / checkpoint.STATE_JSON).read_text())
    config = TrainConfig.from_dict(Progress.from_json(state["progress"]).config, str(folder / checkpoint.STATE_JSON))
    return dataclasses.replace(config, output=str(output))


def fit(config: TrainConfig, base: Base | None = None, resume: bool = False, overwrite: bool = False) -> TunedPrompt:
    """Train a prompt as `config` says; with `resume`, continue from the newest checkpoint in config.output.

    A folder that already holds a run is only reused with `resume` (continue) or `overwrite` (start over); that
    is checked before the data or the model loads.
    """
    steps = fit_steps(config, base, resume, overwrite)
    trainer = next(steps)  # set up
    for _ in steps:
        pass
    return trainer.tuned


def fit_steps(
    config: TrainConfig, base: Base | None = None, resume: bool = False, overwrite: bool = False
) -> Iterator[Trainer]:
    """`fit` in short pieces: the trainer once it is set up, then again after each micro-batch and each optimizer
    step (`Trainer.steps`); the run's folder is final when the iteration ends, and closing it early leaves the
    last checkpoint to resume from. A server trains a job this way, a piece between its batches, on the base it
    serves."""
    config.validate()
    parallel = DataParallel(resolve_device(config.device))
    folder = RunFolder(config.output, parallel.main)
    with folder.lock():
        trainer = Trainer.build(config, base, folder, parallel, folder.start(resume, overwrite))
        yield trainer
        for _ in trainer.steps():
            yield trainer
