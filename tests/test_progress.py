"""Every command that scores rows shows a progress bar on stderr (tqdm, rows done of all), and none with
--no-progress; stdout is the same either way. On the real default model and the fixture prompt folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FOLDERS = Path(__file__).parent / "fixtures" / "folders-v1"
ROWS = ["--task", "raft/twitter_complaints", "--split", "test", "--limit", "12", "--batch-size", "2"]


def _run(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "softprompt", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.parametrize(
    "command",
    [
        ["eval", str(FOLDERS / "prompt-tuning"), str(FOLDERS / "prompt-design"), *ROWS],
        ["ensemble", str(FOLDERS / "prompt-tuning"), str(FOLDERS / "prompt-design"), *ROWS],
        ["predict", str(FOLDERS / "prompt-tuning"), *ROWS, "--output", "{tmp}/predictions.jsonl"],
    ],
    ids=lambda command: command[0],
)
def test_a_scoring_command_shows_its_rows_on_stderr_and_not_with_no_progress(command, tmp_path):
    command = [part.replace("{tmp}", str(tmp_path)) for part in command]
    shown, quiet = _run(*command), _run(*command, "--no-progress")
    assert "scoring:" in shown.stderr and "/12" in shown.stderr and "row/s" in shown.stderr
    assert "scoring:" not in quiet.stderr and "/12" not in quiet.stderr
    assert shown.stdout.count("\n") == quiet.stdout.count("\n")  # the results alone on stdout, bar or not


def test_design_shows_its_dev_scoring_and_not_with_no_progress(tmp_path, data_dir):
    args = ["design", "--task", "raft/twitter_complaints", "--shots", "2", "--dev-fraction", "0.3", "--seed", "1",
            "--eval-batch-size", "2"]  # fmt: skip
    shown = _run(*args, "--output", str(tmp_path / "a"))
    quiet = _run(*args, "--output", str(tmp_path / "b"), "--no-progress")
    assert "scoring:" in shown.stderr and "/15" in shown.stderr
    assert "scoring:" not in quiet.stderr
