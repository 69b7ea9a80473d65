"""Data-parallel training with `accelerate launch` (2 CPU processes, gloo) gives one process's prompt."""

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file


def test_two_processes_match_one_process(tiny_dir, data_dir, tmp_path):
    args = [
        "-m", "softprompt", "train", "--model", str(tiny_dir),
        "--train", str(data_dir / "raft_twitter_complaints/train.csv"),
        "--template", "Tweet text : {Tweet text} Label : ",
        "--label-field", "Label", "--dev-fraction", "0.2", "--num-virtual-tokens", "4", "--init", "sampled-vocab",
        "--epochs", "3", "--batch-size", "8", "--bucket", "--no-progress",
    ]  # fmt: skip
    one = subprocess.run([sys.executable, *args, "--output", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    two = subprocess.run([*launch, *args, "--output", str(tmp_path / "two")], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))["prompt_embeddings"]
    b = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))["prompt_embeddings"]
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3  # one writer, not two
    one_records = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    for mine, theirs in zip(records, one_records):  # the logged train loss is the global batch's
        assert abs(mine["train_loss"] - theirs["train_loss"]) < 1e-4
