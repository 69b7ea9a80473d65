"""Tuning as a service: fine-tuning jobs checked, queued and cancelled; tuning_runner.py trains them.

A job is checked whole when it is created (its files read through the task it names, every row encoded, its
learning-rate metric known to the task, its steps within the limit), so a bad job is a 400 and never a failed
run, and a refused job leaves nothing on disk. It runs with `softprompt train`'s own loop on the server's base:
no second copy of the weights. The files a queued or running job reads cannot be deleted under it.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from ..data.loading import load_data
from ..prompts import checkpoint
from ..prompts.method import PROMPT_TUNING
from ..prompts.tuned import encoder_for
from ..training.train import TrainConfig
from ..training.train_config import check_metric
from ..utils.errors import ParameterError, SoftpromptError
from .config import ServeConfig
from .store import PromptStore, Served, check_name
from .tuning_files import FileStore, StoredFile
from .tuning_jobs import CANCELLED, FINAL, QUEUED, RUNNING, JobStore, TuningJob
from .tuning_recipe import JobRequest, job_config, spelled, task_name, task_options
from .tuning_runner import Runner


class Tuner:
    """The server's fine-tuning desk: jobs created and cancelled (by the routes, any thread), files deleted; its
    `runner` trains them on the batcher's worker thread."""

    def __init__(self, store: PromptStore, files: FileStore, jobs: JobStore, config: ServeConfig) -> None:
        self.store, self.files, self.jobs, self.config = store, files, jobs, config
        self.runner = Runner(store, jobs, config.max_training_jobs)

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
            start = task_options(served.tuned.task, served.tuned.max_length, str(self.jobs.folder(job_id) / "start"))
            self._copy_task(request.model, Path(start["init_from"]))
        config = job_config(request, train, paths, serving, start)
        rows = self._check_rows(config, {train.id: paths[0], **({validation.id: paths[1]} if validation else {})})
        steps = config.total_steps(rows)
        if not 1 <= steps <= self.config.max_job_steps:
            raise SoftpromptError(f"hyperparameters: the job takes {steps} steps; this server takes 1 to "
                                  f"{self.config.max_job_steps} (--max-job-steps)")  # fmt: skip
        name = check_name(task_name(self.config.model, request.suffix, job_id))
        default_lr = PROMPT_TUNING.lr[config.optimizer]
        hyper = {"n_epochs": config.epochs, "batch_size": config.batch_size * config.grad_accum,
                 "learning_rate_multiplier": (config.lr or default_lr) / default_lr}  # fmt: skip
        job = TuningJob(job_id, int(time.time()), request.model, train.id, validation and validation.id, hyper,
                        config.seed, request.suffix, request.metadata, dataclasses.asdict(config), name,
                        steps={"done": 0, "total": steps})  # fmt: skip
        self.jobs.event(job.id, f"Created fine-tuning job {job.id}: {rows} rows, {steps} steps, publishes {name}")
        self.jobs.save(job)
        self.runner.rescan()  # this server starts it at once
        return job

    def _copy_task(self, name: str, folder: Path) -> None:
        folder.mkdir(parents=True)
        with self.store.folder_lock(shared=True):
            for file in (checkpoint.CONFIG, checkpoint.WEIGHTS, checkpoint.META):
                shutil.copyfile(self.store.root / name / file, folder / file)

    def cancel(self, job: TuningJob) -> TuningJob:
        """A queued job ends at once; a running one at its next unit (its runner sees the marker). Only the
        holder of a job's claim writes its state: a job being started is left to its runner."""
        if job.status in (QUEUED, RUNNING):
            self.jobs.cancel(job)
            claim = self.jobs.claim(job.id) if job.status == QUEUED else None
            if claim is not None:
                with claim:
                    now = self.jobs.get(job.id)
                    if now is not None and now.status == QUEUED:
                        self.jobs.end(now, CANCELLED, "Job cancelled")
        return self.jobs.get(job.id) or job

    def delete_file(self, file_id: str) -> bool:
        """Delete an uploaded file, unless a job that has not ended reads it."""
        users = [job.id for job in self.jobs.every() if job.status not in FINAL
                 and file_id in (job.training_file, job.validation_file)]  # fmt: skip
        if users:
            raise SoftpromptError(f"file {file_id}: job {users[0]} reads it; cancel the job or let it end first")
        return self.files.delete(file_id)

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
            check_metric(config.keep_best, data.task)
            encoder = encoder_for(self.store.base, data.task, config.max_length)
            for row in data.train + (data.dev or []):
                encoder.input_ids(row)
                encoder.target_ids(row)
        except SoftpromptError as exc:
            message = exc.spelled(spelled) if isinstance(exc, ParameterError) else str(exc)
            for file_id, path in paths.items():
                message = message.replace(path, file_id)
            raise SoftpromptError(message) from None
        return len(data.train)
