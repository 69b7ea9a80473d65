"""The training recipe the kill-and-resume tests share (test_crash.py, test_train.py): the tiny model on the
tweets, 40 epochs of 5 steps, a checkpoint after every step, one thread per process (so a resumed run can part
from the uninterrupted one only through the resume, never through thread scheduling). Both files compare their
resumed runs with the one uninterrupted run of conftest's `uninterrupted_run`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train_args(tiny_dir: Path, data_dir: Path, output: Path) -> list[str]:
    """The `softprompt train` command line of the recipe, writing to `output`."""
    return [
        sys.executable, "-m", "softprompt", "train", "--model", str(tiny_dir),
        "--train", str(data_dir / "raft_twitter_complaints/train.csv"),
        "--template", "Tweet text : {Tweet text} Label : ", "--label-field", "Label", "--dev-fraction", "0.2",
        "--num-virtual-tokens", "4", "--init", "sampled-vocab", "--epochs", "40", "--batch-size", "8",
        "--save-steps", "1", "--no-progress", "--output", str(output),
    ]  # fmt: skip
