"""A training run's output folder: its lock, whether a new run may start in it, and its metrics log.

`fit` holds the lock and calls `start` before any data or model loads, so a second run pointed at the same
folder, or a folder that holds a run without `resume`/`overwrite`, fails at once. An overwritten run's files
go only once the new run is set up, so a start that fails on its input leaves the old run as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..prompts import checkpoint
from ..utils.errors import ParameterError, SoftpromptError
from .reporting import TENSORBOARD_DIR


@dataclass(frozen=True)
class Start:
    """How a run starts in its folder."""

    resume_from: Path | None  # the checkpoint to continue from
    clear: bool  # overwrite: remove the previous run's files once the new run is set up


class RunFolder:
    """`output/`: the prompt, metrics.jsonl, curves.png, best/, checkpoints/. Only the main process writes."""

    def __init__(self, path: str | Path, main: bool = True) -> None:
        self.path, self.main = Path(path), main
        self.metrics = self.path / "metrics.jsonl"
        self.checkpoints = self.path / "checkpoints"
        self.best = self.path / "best"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold `output/.lock` for the run, so a second training pointed at the same folder refuses to start.

        A folder this call created is removed again if the run fails before writing anything into it."""
        if not self.main:
            yield
            return
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.path / ".lock", "w") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise SoftpromptError(f"{self.path}: another training run is using this folder") from None
                yield
        except BaseException:
            if created and [p.name for p in self.path.iterdir()] == [".lock"]:
                shutil.rmtree(self.path, ignore_errors=True)
            raise

    def start(self, resume: bool, overwrite: bool) -> Start:
        """Check, under the lock, that a run may start here: a folder that already holds one is only reused to
        continue it (`resume`) or start over (`overwrite`). Leftovers of killed checkpoint writes are removed."""
        previous = checkpoint.latest_checkpoint(self.checkpoints)
        if self.main:
            checkpoint.remove_partial(self.checkpoints)
        if resume:
            return Start(self.resume_point(), clear=False)
        if previous is None and not self.metrics.exists():
            return Start(None, clear=False)
        if not overwrite:
            raise ParameterError(
                "output",
                "{path} already holds a training run; pass {resume} to continue it, {overwrite} to start over, or "
                "another {output}",
                path=str(self.path),
            )
        return Start(None, clear=True)

    def resume_point(self) -> Path:
        """The newest whole checkpoint."""
        folder = checkpoint.latest_checkpoint(self.checkpoints)
        if folder is None:
            raise SoftpromptError(f"{self.path}: no checkpoint to resume from")
        return folder

    def clear(self) -> None:
        """Remove a previous run's checkpoints, best prompt, metrics and TensorBoard events (for `overwrite`)."""
        self.prune()
        if self.main:
            shutil.rmtree(self.path / TENSORBOARD_DIR, ignore_errors=True)
            self.metrics.unlink(missing_ok=True)

    def prune(self) -> None:
        """Remove what only resuming or choosing the best needs (checkpoints, best/) from a finished run, whose
        folder already holds its final prompt or model: at 0.5B model tuning they are 15 GB a run."""
        if self.main:
            for folder in (self.checkpoints, self.best):
                shutil.rmtree(folder, ignore_errors=True)

    def keep_records(self, count: int) -> None:
        """Drop what a killed run logged after its last checkpoint, which recorded `count` records."""
        if self.metrics.is_file() and self.main:
            lines = self.metrics.read_text().splitlines()[:count]
            checkpoint.atomic_write(self.metrics, "".join(line + "\n" for line in lines).encode())

    def log(self, record: dict) -> None:
        with open(self.metrics, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def save_checkpoint(self, step: int, files: checkpoint.Files) -> None:
        if self.main:
            checkpoint.save_checkpoint(self.checkpoints, step, files)
