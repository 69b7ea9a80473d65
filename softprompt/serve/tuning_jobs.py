"""Fine-tuning jobs as the server keeps them: OpenAI's job object, its events and its checkpoints, on disk.

Each job is a folder `.jobs/ftjob-ID/` beside the prompts: `job.json` (OpenAI's fields and the run's
`TrainConfig`), rewritten atomically at each change of status; `events.jsonl`, appended (each status change,
each optimizer step's loss, each evaluation's metrics); `cancel`, a marker a cancel request leaves; and `run/`,
the training run's folder (checkpoints, metrics, the prompt). The disk is the one truth: every read goes to it,
so replicas sharing the prompts folder see the same jobs, and a server killed mid-job finds it on restart and
resumes it from its last checkpoint.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from ..prompts.checkpoint import atomic_write
from .tuning_files import time_ordered_id

JOBS_DIR = ".jobs"
RUNNING, QUEUED, SUCCEEDED, FAILED, CANCELLED = "running", "queued", "succeeded", "failed", "cancelled"
FINAL = (SUCCEEDED, FAILED, CANCELLED)
ORGANIZATION = "softprompt"


@dataclass
class TuningJob:
    """One job: what OpenAI's `fine_tuning.job` shows, and the `TrainConfig` its run trains with."""

    id: str
    created_at: int
    model: str
    training_file: str
    validation_file: str | None
    hyperparameters: dict  # n_epochs, batch_size, learning_rate_multiplier, as resolved
    seed: int
    suffix: str | None
    metadata: dict | None
    train_config: dict  # the run's TrainConfig: `softprompt train` given these trains the same prompt
    fine_tuned_model: str  # the task it is published as (OpenAI names it only once it exists: see to_openai)
    status: str = QUEUED
    finished_at: int | None = None
    error: str | None = None
    trained_tokens: int | None = None
    steps: dict = field(default_factory=dict)  # {"done": n, "total": n} once it runs

    @staticmethod
    def new_id() -> str:
        return f"ftjob-{time_ordered_id()}"

    def to_openai(self) -> dict:
        """OpenAI's `fine_tuning.job`, plus `softprompt`: the recipe the run trains with and its steps."""
        failed = {"code": "training_failed", "message": self.error, "param": None} if self.error else None
        return {
            "id": self.id, "object": "fine_tuning.job", "created_at": self.created_at, "model": self.model,
            "organization_id": ORGANIZATION, "status": self.status, "training_file": self.training_file,
            "validation_file": self.validation_file, "hyperparameters": self.hyperparameters, "seed": self.seed,
            "suffix": self.suffix, "metadata": self.metadata, "result_files": [], "error": failed,
            "fine_tuned_model": self.fine_tuned_model if self.status == SUCCEEDED else None,
            "finished_at": self.finished_at, "trained_tokens": self.trained_tokens, "estimated_finish": None,
            "method": {"type": "supervised", "supervised": {"hyperparameters": self.hyperparameters}},
            "softprompt": {"recipe": self.train_config, "steps": self.steps, "task": self.fine_tuned_model},
        }  # fmt: skip


class JobStore:
    """The jobs under `prompts/.jobs`, read from disk on every call."""

    def __init__(self, prompts: Path) -> None:
        self.root = Path(prompts).resolve() / JOBS_DIR  # absolute: a job's recipe names its paths

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def run_folder(self, job_id: str) -> Path:
        return self.folder(job_id) / "run"

    def save(self, job: TuningJob) -> None:
        atomic_write(self.folder(job.id) / "job.json", json.dumps(asdict(job)).encode())

    def get(self, job_id: str) -> TuningJob | None:
        """The job, or None for an unknown id or a job.json this server cannot read (another version's)."""
        path = self.folder(job_id) / "job.json"
        if not job_id.startswith("ftjob-") or not job_id[6:].isalnum() or not path.is_file():
            return None
        try:
            return TuningJob(**json.loads(path.read_text()))
        except (ValueError, TypeError, OSError):
            return None

    def every(self) -> list[TuningJob]:
        """Every job, newest first (OpenAI's order)."""
        jobs = (self.get(path.parent.name) for path in self.root.glob("ftjob-*/job.json"))
        return sorted((job for job in jobs if job is not None), key=lambda j: j.id, reverse=True)

    def queued(self) -> list[TuningJob]:
        """The jobs waiting to run (and those a stopped server left running), oldest first."""
        return [job for job in reversed(self.every()) if job.status in (QUEUED, RUNNING)]

    def claim(self, job_id: str) -> IO | None:
        """The job's lock, held by whoever writes its state (the runner training it, or a cancel of a queued
        job), or None where another holds it; released when the handle closes."""
        handle = open(self.folder(job_id) / ".claim", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle

    def end(self, job: TuningJob, status: str, message: str) -> None:
        """The job's last status, with its event (the caller holds its claim)."""
        job.status, job.finished_at = status, int(time.time())
        job.error = message if status == FAILED else None
        self.event(job.id, message, level="error" if status == FAILED else "info")
        self.save(job)

    def cancel(self, job: TuningJob) -> None:
        """Leave the marker the runner looks for before each step."""
        (self.folder(job.id) / "cancel").touch()

    def cancelling(self, job_id: str) -> bool:
        return (self.folder(job_id) / "cancel").exists()

    def event(self, job_id: str, message: str, data: dict | None = None, level: str = "info") -> None:
        """Append one event (a metrics event when it carries `data`)."""
        record = {"created_at": int(time.time()), "level": level, "message": message, "data": data,
                  "type": "metrics" if data is not None else "message"}  # fmt: skip
        self.folder(job_id).mkdir(parents=True, exist_ok=True)
        with open(self.folder(job_id) / "events.jsonl", "a+b") as handle:
            torn = False
            if handle.seek(0, os.SEEK_END):
                handle.seek(-1, os.SEEK_END)
                torn = handle.read(1) != b"\n"  # a server killed while writing its last line: end that line
            handle.write((("\n" if torn else "") + json.dumps(record) + "\n").encode())

    def events(self, job_id: str) -> list[dict]:
        """OpenAI's `fine_tuning.job.event`s, newest first; ids count up from the first."""
        path = self.folder(job_id) / "events.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        found = []
        for number, line in enumerate(lines, 1):
            try:
                found.append({"id": f"ftevent-{job_id[6:]}{number:08d}", "object": "fine_tuning.job.event",
                              **json.loads(line)})  # fmt: skip
            except json.JSONDecodeError:  # the last line of a server killed while writing it
                continue
        return found[::-1]

    def last_step(self, job_id: str) -> int:
        """The highest step an event reported: a resumed run's replayed steps are not reported twice."""
        steps = [e["data"].get("step", 0) for e in self.events(job_id) if e.get("data") and "train_loss" in e["data"]]
        return max(steps, default=0)
