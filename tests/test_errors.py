"""Bad input through the real CLI: one line on stderr naming the file/row/field, exit code 2, no traceback.

Each case is one `python -m softprompt` subprocess (~4-5 s, mostly importing torch and transformers). There
are fourteen; a module fixture runs them two at a time up front and each test checks its own result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from softprompt.data.tasks import Task
from softprompt.prompts.checkpoint import WEIGHTS, save_prompt
from softprompt.prompts.record import FolderRecord

RAFT = "raft_twitter_complaints/train.csv"
RAFT_TASK = Task("Tweet text : {Tweet text} Label : ", "Label", ["complaint", "no complaint"])


@dataclass
class Case:
    args: list
    needles: list[str]
    output: Path | None = None  # a train output folder that must not get a prompt
    one_line: bool = True
    result: subprocess.CompletedProcess | None = field(default=None, repr=False)


# Train cases: the training file's bytes (None: no file), extra flags (a later flag wins), what the message names.
TRAIN_CASES = {
    "missing-file": (None, [], ["no such file"]),
    "missing-label-column": (b"text,sentiment\nhello,a\n", [], ["label field 'label' is not a column"]),
    "label-not-in-labels": (
        b"text,label\nfine,a\nalso fine,b\nbad one,c\nlater,a\n",
        ["--labels", "a,b"],
        ["row 3", "label='c'", "(a, b)"],
    ),
    "empty-file": (b"", [], ["empty file"]),
    "header-only": (b"text,label\n", [], ["no rows"]),
    "not-utf8": (b"text,label\nok,a\nbad \xff\xfe bytes,b\n", [], ["not UTF-8", "offset 20"]),
    "template-field-missing": (
        b"text,label\nhello,a\n",
        ["--template", "Body : {body} Label : "],
        ["template field {body} is not a column"],
    ),
    "empty-input": (b"text,label\nfine,a\n,b\n", ["--template", "{text}"], ["row 2", "empty input", "text"]),
    "bogus-optimizer": (b"text,label\nhello,a\n", ["--optimizer", "bogus"], ["--optimizer", "'bogus'"]),
    "verbalizer-not-a-label": (
        b"text,label\nfine,a\nbad,b\n",
        ["--verbalizer", "a=yes,c=no"],
        ["--verbalizer", "'c' is not a label", "(labels: a, b)"],
    ),
}
OPTION_ERRORS = ("bogus-optimizer", "verbalizer-not-a-label")  # these name the option, not the file
OTHER_CASES = ["unknown-task", "hidden-size", "pickle-only", "gpu-missing"]


def train_case(root: Path, name: str, tiny_dir: Path) -> Case:
    data, extra, needles = TRAIN_CASES[name]
    train, output = root / f"{name}.csv", root / f"{name}-out"
    if data is not None:
        train.write_bytes(data)
    args = [
        "train",
        "--train",
        train,
        "--template",
        "{text} Label : ",
        "--label-field",
        "label",
        "--model",
        tiny_dir,
        "--epochs",
        "1",
        "--no-progress",
        "--output",
        output,
        *extra,
    ]
    named = [] if name in OPTION_ERRORS else [train.name]
    return Case(args, named + needles, output)


def other_case(root: Path, name: str, tiny_dir: Path, data_dir: Path) -> Case:
    if name == "unknown-task":
        output = root / "task-out"
        args = ["train", "--task", "bogus/task", "--model", tiny_dir, "--epochs", "1", "--output", output]
        return Case(args, ["unknown task 'bogus/task'", "raft/twitter_complaints"], output)
    if name == "gpu-missing":  # a model that does not exist: the device is refused before any model loads
        output = root / "gpu-out"
        args = ["train", "--task", "raft/twitter_complaints", "--model", root / "no-such-model", "--device", "cuda",
                "--output", output]  # fmt: skip
        return Case(args, ["--device: cuda asked for, but this machine has no CUDA device"], output)
    folder = root / name
    if name == "hidden-size":
        # A [4, 16] prompt, but the tiny model has hidden size 32.
        save_prompt(
            folder,
            torch.zeros(4, 16),
            {"num_virtual_tokens": 4, "peft_type": "PROMPT_TUNING"},
        )
        FolderRecord(task=RAFT_TASK).write(folder)
        needles, one_line = [str(folder), "hidden size 16", "has 32"], True
    else:
        # Only PEFT's pickle format: refused before anything is unpickled.
        folder.mkdir()
        torch.save({"prompt_embeddings": torch.zeros(4, 32)}, folder / "adapter_model.bin")
        (folder / "softprompt.json").write_text(json.dumps({"task": RAFT_TASK.to_json()}))
        needles, one_line = [str(folder), WEIGHTS, "adapter_model.bin", "pickle"], True
    args = ["eval", folder, "--model", tiny_dir, "--data", data_dir / RAFT]
    return Case(args, needles, one_line=one_line)


@pytest.fixture(scope="module")
def cases(tmp_path_factory, tiny_dir, data_dir) -> dict[str, Case]:
    root = tmp_path_factory.mktemp("bad-input")
    built = {name: train_case(root, name, tiny_dir) for name in TRAIN_CASES}
    built.update({name: other_case(root, name, tiny_dir, data_dir) for name in OTHER_CASES})
    env = {**os.environ, "SOFTPROMPT_DATA": str(data_dir)}

    def run(case: Case) -> None:
        case.result = subprocess.run(
            [sys.executable, "-m", "softprompt", *map(str, case.args)],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(run, built.values()))
    return built


@pytest.mark.parametrize("name", [*TRAIN_CASES, *OTHER_CASES])
def test_bad_input_is_one_line_exit_2(name, cases):
    if name == "gpu-missing" and torch.cuda.is_available():
        pytest.skip("this host has a GPU: --device cuda is no error here")
    case = cases[name]
    result = case.result
    stderr = result.stderr
    context = f"{name}: rc={result.returncode}\nstderr:\n{stderr}"
    assert result.returncode == 2, context
    assert "Traceback" not in stderr, context
    lines = stderr.strip().splitlines()
    if case.one_line:
        assert len(lines) == 1, context
    errors = [line for line in lines if line.startswith("softprompt: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], context
    for needle in case.needles:
        assert needle in errors[0], context
    assert result.stdout == "", context
    if case.output is not None:
        assert not (case.output / WEIGHTS).exists(), "a failed train must not leave a prompt"
