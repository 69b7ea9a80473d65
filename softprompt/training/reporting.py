"""Where a run's metrics go besides metrics.jsonl: TensorBoard, with `--report-to tensorboard` (HF Trainer's
`report_to`). The same scalars under the same names and steps as metrics.jsonl; a resumed run first hides what
a killed run logged after its checkpoint (TensorBoard's purge step), as metrics.jsonl drops those lines."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..utils.errors import ParameterError

TENSORBOARD_DIR = "tensorboard"  # under the run's folder
REPORT_TO = ("none", "tensorboard")


def check_installed(report_to: str) -> None:
    """A one-line error, before anything loads, where the chosen reporter's package is missing."""
    if report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ParameterError("report_to", "tensorboard needs its package: pip install 'softprompt[tensorboard]'")


class TensorBoard:
    def __init__(self, folder: Path, resume_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = resume_step + 1 if resume_step else None
        self.writer = SummaryWriter(str(folder / TENSORBOARD_DIR), purge_step=purge)

    def log(self, record: dict) -> None:
        """Every number of a metrics.jsonl record but its step, at that step; flushed, so a kill loses none."""
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float):
                self.writer.add_scalar(key, value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_reporter(report_to: str, folder: Path, step: int) -> TensorBoard | None:
    """The run's reporter from `step` on (0 for a fresh run), or None."""
    return TensorBoard(folder, step) if report_to == "tensorboard" else None
