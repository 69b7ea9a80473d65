"""The fine-tuning jobs' runner: the batcher's worker thread trains them, a short unit at a time, on its base.

The worker owns the model, so it runs a job's units itself (batcher.py's `Background`): a unit is the run's
set-up, a micro-batch's forward, its backward, or an optimizer step and what follows it (`fit_steps`). Nothing the
batcher does reaches a run's state, so the prompt is bit for bit `softprompt train`'s with the same rows,
recipe and seed, with or without traffic. Whoever trains a job holds its claim (a lock: one replica of many),
and re-reads it once claimed, so a job ended meanwhile is never started again. On success the prompt is installed
into the store (atomically, as an upload is) and served at once. Nothing a job does can stop the worker: any
error fails the job with one line.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..models.prepacked import release_transposed
from ..prompts import checkpoint
from ..prompts.model_card import record_evaluation
from ..toolbox.prompt_design import run_design
from ..training.train import TrainConfig, Trainer, fit_steps
from ..utils.errors import SoftpromptError
from .store import FOLDER_FILES, PromptStore
from .tuning_jobs import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, JobStore, TuningJob

RESCAN_S = 1.0  # how often an idle server looks for jobs to run (another replica may have queued one)


class Running:
    """A job being trained here: its units (`fit_steps`), and its claim."""

    def __init__(self, job: TuningJob, steps: Iterator[Trainer], claim: IO) -> None:
        self.job, self.steps, self.claim = job, steps, claim
        self.trainer: Trainer | None = None
        self.reported = 0  # the last step an event reported (a resumed run replays steps after its checkpoint)
        self.logged = 0  # the run's metrics records when it was last reported

    def close(self) -> None:
        self.steps.close()  # the run's folder lock goes; its last checkpoint stays
        self.claim.close()


class Runner:
    """The jobs this server trains, `max_jobs` at a time in turn, as the batcher's background work."""

    def __init__(self, store: PromptStore, jobs: JobStore, max_jobs: int) -> None:
        self.store, self.jobs, self.max_jobs = store, jobs, max_jobs
        self.running: list[Running] = []
        self._turn = 0
        self._found: list[TuningJob] = []  # the jobs waiting, as the disk said at the last scan
        self._scanned = -RESCAN_S

    def rescan(self) -> None:
        """Look at the disk again at the next chance (a job was just queued here)."""
        self._scanned = -RESCAN_S

    def pending(self) -> bool:
        """Whether a job runs or waits; waiting jobs are read from disk at most once a second (the worker asks
        after every batch)."""
        return bool(self.running) or bool(self._waiting())

    def _waiting(self) -> list[TuningJob]:
        now = time.monotonic()
        if now - self._scanned >= RESCAN_S:
            held = {run.job.id for run in self.running}
            self._found = [job for job in self.jobs.queued() if job.id not in held]
            self._scanned = now
        return self._found

    def work(self) -> None:
        """One unit: start a waiting job, or take the next unit of a running one (jobs in turn)."""
        if len(self.running) < self.max_jobs:
            for job in list(self._waiting()):
                self._found.remove(job)  # tried once a scan: started here, ended, or held by another replica
                if self._start(job):
                    return
        if not self.running:
            return
        self._turn = (self._turn + 1) % len(self.running)
        run = self.running[self._turn]
        if self.jobs.cancelling(run.job.id):
            self._stop(run, CANCELLED, "Job cancelled")
            return
        try:
            run.trainer = next(run.steps)
            self._report(run)
            return
        except StopIteration:
            pass
        except Exception as exc:  # an error of the input's or a bug of ours fails the job, never the server
            self._stop(run, FAILED, _one_line(exc))
            return
        try:
            self._publish(run)
        except Exception as exc:
            self._stop(run, FAILED, f"publishing: {_one_line(exc)}")

    def _start(self, job: TuningJob) -> bool:
        """Claim the job and begin its run (from its checkpoint, if it has one); False where it is not to run."""
        claim = self.jobs.claim(job.id)
        if claim is None:
            return False
        job = self.jobs.get(job.id)  # as it is now that it is ours: it may have ended since the scan
        if job is None or job.status not in (QUEUED, RUNNING):
            claim.close()
            return False
        if self.jobs.cancelling(job.id):
            self.jobs.end(job, CANCELLED, "Job cancelled")
            claim.close()
            return True
        try:
            config = TrainConfig.from_dict(job.train_config, f"job {job.id}")
            resume = checkpoint.latest_checkpoint(self.jobs.run_folder(job.id) / "checkpoints") is not None
            run = Running(job, fit_steps(config, self.store.base, resume=resume, overwrite=not resume), claim)
        except Exception as exc:
            self.jobs.end(job, FAILED, _one_line(exc))
            claim.close()
            return True
        run.reported = self.jobs.last_step(job.id)
        self.running.append(run)
        job.status = RUNNING
        self.jobs.event(job.id, "Resumed from the last checkpoint" if resume else "Fine-tuning job started")
        self.jobs.save(job)
        return True

    def _report(self, run: Running) -> None:
        """Events for a step not reported before: its loss, and an evaluation's metrics when it made one."""
        trainer, job = run.trainer, run.job
        step = trainer.progress.step
        if trainer.step_loss is None or step <= run.reported:
            return
        run.reported = step
        total = trainer.plan.total_steps
        self.jobs.event(job.id, f"Step {step}/{total}: training loss={trainer.step_loss:.4f}",
                        {"step": step, "train_loss": trainer.step_loss, "total_steps": total})  # fmt: skip
        logged, run.logged = run.logged, trainer.progress.logged
        record = {}
        if trainer.progress.logged > logged:  # this step logged a record: read it back
            record = json.loads(trainer.folder.metrics.read_text().splitlines()[-1])
        if record.get("step") == step and "eval_loss" in record:  # it evaluated on the dev rows
            shown = ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k.startswith("eval_") or k in
                              ("accuracy", "macro_f1", "exact_match", "f1"))  # fmt: skip
            self.jobs.event(job.id, f"Step {step}: {shown}", record)
        job.steps = {"done": step, "total": total}
        if step % 10 == 0 or step == total:  # the job's own file is not rewritten every step
            self.jobs.save(job)

    def _publish(self, run: Running) -> None:
        """Install the finished prompt as the job's task (a new task, served at once) and end the job."""
        job, folder, trainer = run.job, self.jobs.run_folder(run.job.id), run.trainer
        if job.validation_file:
            self._held_out(run, folder)
        self.store.install(job.fine_tuned_model, {name: (folder / name).read_bytes() for name in FOLDER_FILES
                                                  if (folder / name).is_file()})  # fmt: skip
        # Tokens trained on: the rows' tokens, times the rows the steps saw over the rows there are.
        seen = trainer.progress.step * trainer.config.batch_size * trainer.config.grad_accum
        job.trained_tokens = round(sum(len(s) + len(t) for s, t in trainer.encoded) * seen / len(trainer.encoded))
        self._stop(run, SUCCEEDED, f"Published {job.fine_tuned_model}: the task is served")

    def _held_out(self, run: Running, folder: Path) -> None:
        """The prompt's validation metrics beside the majority class's and prompt design's (demonstrations of the
        training rows, untrained), in its record and card and an event, before it is published."""
        trainer, source = run.trainer, f"validation file {run.job.validation_file}"
        config, rows = trainer.config, trainer.eval_rows
        ours = trainer.tuned.evaluate(rows, config.eval_batch_size, by_label=True)
        design = run_design(dataclasses.replace(config, output=str(folder.parent / "design")), self.store.base,
                            overwrite=True).record.metrics  # fmt: skip
        figures = {source: ours, f"{source}: prompt design, {config.shots} demonstrations": design}
        if "majority_accuracy" in ours:
            figures[f"{source}: majority class"] = {"accuracy": ours["majority_accuracy"],
                                                    "macro_f1": ours["majority_macro_f1"]}  # fmt: skip
        for name, metrics in figures.items():
            record_evaluation(folder, name, metrics)
        shown = [k for k in ("accuracy", "macro_f1", "exact_match", "f1") if k in ours]
        self.jobs.event(run.job.id, "; ".join(f"{name}: " + ", ".join(f"{k}={m[k]:.4g}" for k in shown if k in m)
                                              for name, m in figures.items()), {"held_out": figures})  # fmt: skip

    def _stop(self, run: Running, status: str, message: str) -> None:
        if run.trainer is not None:
            run.job.steps = {"done": run.trainer.progress.step, "total": run.trainer.plan.total_steps}
        self.jobs.end(run.job, status, message)
        run.close()
        self.running.remove(run)
        if not self.running:
            release_transposed(self.store.base.model)  # a bfloat16 CPU base's backward layout: only while training


def _one_line(exc: Exception) -> str:
    if isinstance(exc, SoftpromptError):
        return str(exc)
    return f"internal error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
