"""Tuning as a service: fine-tuning jobs trained inside the server, on the frozen base it serves, then served.

A job is checked whole when it is created (its files read through the task it names, every row encoded), so
a bad job is a 400 and never a failed run. It then runs with `softprompt train`'s own loop (`fit_steps`), on
the server's base: no second copy of the weights. The batcher's worker thread owns the model, so it runs the
job's steps itself, one at a time, when no request waits, and after every `train_every` batches when requests
keep coming (batcher.py); serving keeps priority and the job still ends. Nothing the batcher does reaches a
run's state, so the prompt is bit for bit `softprompt train`'s with the same rows, recipe and seed, with or
without traffic. A run checkpoints every few steps; a server killed mid-job resumes it from there on restart.
On success the prompt is installed into the store (atomically, as an upload is) and served at once.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from ..data.loading import load_data
from ..prompts import checkpoint
from ..prompts.method import PROMPT_TUNING
from ..prompts.model_card import record_evaluation
from ..prompts.tuned import encoder_for
from ..toolbox.prompt_design import run_design
from ..training.train import TrainConfig, Trainer, fit_steps
from ..utils.errors import SoftpromptError
from .config import ServeConfig
from .store import FOLDER_FILES, PromptStore, Served
from .tuning_files import FileStore, StoredFile
from .tuning_jobs import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, JobStore, TuningJob
from .tuning_recipe import JobRequest, job_config, job_steps, task_name, task_options

RESCAN_S = 1.0  # how often an idle server looks for jobs to run (another replica may have queued one)


class Running:
    """A job being trained here: its steps (`fit_steps`), held with a lock that claims it from other replicas."""

    def __init__(self, job: TuningJob, steps: Iterator[Trainer], claim) -> None:
        self.job, self.steps, self.claim = job, steps, claim
        self.trainer: Trainer | None = None
        self.reported = 0  # the last step an event reported (a resumed run replays steps after its checkpoint)

    def close(self) -> None:
        self.steps.close()  # the run's folder lock goes; its last checkpoint stays
        self.claim.close()


class Tuner:
    """The server's fine-tuning jobs: created and cancelled by the routes, run by the batcher's worker thread."""

    def __init__(self, store: PromptStore, files: FileStore, jobs: JobStore, config: ServeConfig) -> None:
        self.store, self.files, self.jobs, self.config = store, files, jobs, config
        self.running: list[Running] = []
        self._turn = 0
        self._found: list[TuningJob] = []  # the jobs waiting, as the disk said at the last scan
        self._scanned = -RESCAN_S

    # Called by the routes (any thread).

    def create(self, request: JobRequest) -> TuningJob:
        """Check a job whole (its files through its task, every row encoded, its steps within the limit) and
        queue it; SoftpromptError names what is wrong, and then nothing is kept."""
        base = self.store.base
        from_base = request.model in (self.config.model, base.model.name_or_path)
        served = None if from_base else self.store.get(request.model)
        if served is None and not from_base:
            raise SoftpromptError(f"model: {request.model!r} is neither this server's base ({self.config.model!r}) "
                                  "nor a task it serves")  # fmt: skip
        train = self._file(request.training_file, "training_file")
        validation = self._file(request.validation_file, "validation_file") if request.validation_file else None
        job_id = TuningJob.new_id()
        try:
            return self._queue(request, job_id, train, validation, served)
        except BaseException:
            shutil.rmtree(self.jobs.folder(job_id), ignore_errors=True)  # a job refused leaves nothing behind
            raise

    def _queue(self, request: JobRequest, job_id: str, train: StoredFile, validation: StoredFile | None,
               served: Served | None) -> TuningJob:  # fmt: skip
        base = self.store.base
        serving = {"model": self.config.model, "dtype": str(base.model.dtype).removeprefix("torch."),
                   "device": str(base.device), "output": str(self.jobs.run_folder(job_id))}  # fmt: skip
        paths = (str(self.files.rows_path(train.id)), validation and str(self.files.rows_path(validation.id)))
        start = None
        if served is not None:  # the task's prompt as it is now, kept with the job (a later upload changes nothing)
            start = task_options(served.tuned.task, str(self.jobs.folder(job_id) / "start"))
            self._copy_task(request.model, Path(start["init_from"]))
        config = job_config(request, train, paths, serving, start)
        rows = self._check_rows(config, {train.id: paths[0], **({validation.id: paths[1]} if validation else {})})
        steps = job_steps(config, rows)
        if steps > self.config.max_job_steps:
            raise SoftpromptError(f"hyperparameters: the job takes {steps} steps, over this server's limit of "
                                  f"{self.config.max_job_steps} (--max-job-steps)")  # fmt: skip
        name = task_name(self.config.model, request.suffix, job_id)
        default_lr = PROMPT_TUNING.lr[config.optimizer]
        hyper = {"n_epochs": config.epochs, "batch_size": config.batch_size * config.grad_accum,
                 "learning_rate_multiplier": (config.lr or default_lr) / default_lr}  # fmt: skip
        job = TuningJob(job_id, int(time.time()), request.model, train.id, validation and validation.id, hyper,
                        config.seed, request.suffix, request.metadata, dataclasses.asdict(config), name,
                        steps={"done": 0, "total": steps})  # fmt: skip
        self.jobs.save(job)
        self._scanned = -RESCAN_S  # this server starts it at once
        self.jobs.event(job.id, f"Created fine-tuning job {job.id}: {rows} rows, {steps} steps, publishes {name}")
        return job

    def _copy_task(self, name: str, folder: Path) -> None:
        folder.mkdir(parents=True)
        with self.store.folder_lock(shared=True):
            for file in (checkpoint.CONFIG, checkpoint.WEIGHTS, checkpoint.META):
                shutil.copyfile(self.store.root / name / file, folder / file)

    def cancel(self, job: TuningJob) -> TuningJob:
        """A queued job ends at once; a running one at its next step (the runner sees the marker)."""
        if job.status in (QUEUED, RUNNING):
            self.jobs.cancel(job)
            if job.status == QUEUED and not any(r.job.id == job.id for r in self.running):
                self._end(job, CANCELLED, "Job cancelled")
        return self.jobs.get(job.id) or job

    def _file(self, file_id: str, field: str) -> StoredFile:
        stored = self.files.get(file_id)
        if stored is None:
            raise SoftpromptError(f"{field}: no file {file_id!r} on this server (upload it to /v1/files)")
        return stored

    def _check_rows(self, config: TrainConfig, paths: dict[str, str]) -> int:
        """Every training and validation row read by the task and encoded as the run will; the training rows'
        count. Errors name the file by its id."""
        try:
            data = load_data(config)
            encoder = encoder_for(self.store.base, data.task, config.max_length)
            for row in data.train + (data.dev or []):
                encoder.input_ids(row)
                encoder.target_ids(row)
        except SoftpromptError as exc:
            message = str(exc)
            for file_id, path in paths.items():
                message = message.replace(path, file_id)
            raise SoftpromptError(message) from None
        return len(data.train)

    # Called by the batcher's worker thread.

    def pending(self) -> bool:
        """Whether a job runs or waits. Waiting jobs are read from disk (a replica's job shows on every replica),
        at most once a second: the worker asks after every batch."""
        return bool(self.running) or bool(self._waiting())

    def _waiting(self) -> list[TuningJob]:
        """The jobs to start, as the disk said at most RESCAN_S ago."""
        now = time.monotonic()
        if now - self._scanned >= RESCAN_S:
            self._found, self._scanned = self._claimable(), now
        return self._found

    def work(self) -> None:
        """One unit of training: start a waiting job, or take one step of a running one (jobs in turn)."""
        if len(self.running) < self.config.max_training_jobs:
            for job in list(self._waiting()):
                self._found.remove(job)  # tried once a scan: started here, or held by another replica
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
        except StopIteration:
            self._publish(run)
        except SoftpromptError as exc:
            self._stop(run, FAILED, str(exc))
        except Exception as exc:  # a bug of ours fails the job, never the server
            self._stop(run, FAILED, f"internal error ({type(exc).__name__}: {exc})")

    def _claimable(self) -> list[TuningJob]:
        held = {run.job.id for run in self.running}
        return [job for job in self.jobs.queued() if job.id not in held]

    def _start(self, job: TuningJob) -> bool:
        """Claim the job (a lock no other replica holds) and begin its run, from its checkpoint if it has one."""
        claim = open(self.jobs.folder(job.id) / ".claim", "w")
        try:
            fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            claim.close()
            return False
        config = TrainConfig.from_dict(job.train_config, f"job {job.id}")
        resume = checkpoint.latest_checkpoint(self.jobs.run_folder(job.id) / "checkpoints") is not None
        steps = fit_steps(config, self.store.base, resume=resume, overwrite=not resume)
        run = Running(job, steps, claim)
        run.reported = self.jobs.last_step(job.id)
        self.running.append(run)
        job.status = RUNNING
        self.jobs.save(job)
        self.jobs.event(job.id, "Resumed from the last checkpoint" if resume else "Fine-tuning job started")
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
        lines = trainer.folder.metrics.read_text().splitlines() if trainer.folder.metrics.is_file() else []
        record = json.loads(lines[-1]) if lines else {}
        if record.get("step") == step and "eval_loss" in record:  # this step evaluated on the dev rows
            shown = ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k.startswith("eval_") or k in
                              ("accuracy", "macro_f1", "exact_match", "f1"))  # fmt: skip
            self.jobs.event(job.id, f"Step {step}: {shown}", record)
        job.steps = {"done": step, "total": total}
        if step % 10 == 0 or step == total:  # the job's own file is not rewritten every step
            self.jobs.save(job)

    def _publish(self, run: Running) -> None:
        """Install the finished prompt as the job's task (a new task, served at once) and end the job."""
        job, folder = run.job, self.jobs.run_folder(run.job.id)
        try:
            if job.validation_file:
                self._held_out(run, folder)
            files = {name: (folder / name).read_bytes() for name in FOLDER_FILES if (folder / name).is_file()}
            self.store.install(job.fine_tuned_model, files)
        except SoftpromptError as exc:
            self._stop(run, FAILED, f"publishing: {exc}")
            return
        trainer = run.trainer  # tokens trained on: the rows' tokens, times the rows each step saw over the rows
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
            majority = {"accuracy": ours["majority_accuracy"], "macro_f1": ours["majority_macro_f1"]}
            figures[f"{source}: majority class"] = majority
        for name, metrics in figures.items():
            record_evaluation(folder, name, metrics)
        shown = [k for k in ("accuracy", "macro_f1", "exact_match", "f1") if k in ours]
        self.jobs.event(run.job.id, "; ".join(f"{name}: " + ", ".join(f"{k}={m[k]:.4g}" for k in shown if k in m)
                                              for name, m in figures.items()), {"held_out": figures})  # fmt: skip

    def _stop(self, run: Running, status: str, message: str) -> None:
        run.close()
        self.running.remove(run)
        if run.trainer is not None:
            run.job.steps = {"done": run.trainer.progress.step, "total": run.trainer.plan.total_steps}
        self._end(run.job, status, message)

    def _end(self, job: TuningJob, status: str, message: str) -> None:
        job.status, job.finished_at = status, int(time.time())
        job.error = message if status == FAILED else None
        self.jobs.save(job)
        self.jobs.event(job.id, message, level="error" if status == FAILED else "info")

