"""Training: determinism, resume after SIGKILL bit for bit, both recipes, and a short real-model run."""

import dataclasses
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from softprompt.prompts import checkpoint
from softprompt.prompts.tuned import TunedPrompt
from softprompt.training.train import TrainConfig, fit
from softprompt.utils.errors import SoftpromptError

from .resuming import ONE_THREAD, train_args


def _config(tiny_dir, data_dir, output, **overrides) -> TrainConfig:
    values = dict(
        model=str(tiny_dir),
        train=str(data_dir / "raft_twitter_complaints/train.csv"),
        template="Tweet text : {Tweet text} Label : ",
        label_field="Label",
        dev_fraction=0.2,
        num_virtual_tokens=4,
        init="sampled-vocab",
        epochs=3,
        batch_size=8,
        output=str(output),
        progress=False,
    )
    return TrainConfig(**{**values, **overrides})


def _prompt(folder: Path) -> torch.Tensor:
    return load_file(str(folder / checkpoint.WEIGHTS))["prompt_embeddings"]


def test_same_seed_same_prompt_other_seed_other_prompt(tiny, tiny_dir, data_dir, tmp_path):
    a = fit(_config(tiny_dir, data_dir, tmp_path / "a"), base=tiny).lm.prompt.embedding.detach().clone()
    b = fit(_config(tiny_dir, data_dir, tmp_path / "b"), base=tiny).lm.prompt.embedding.detach().clone()
    c = fit(_config(tiny_dir, data_dir, tmp_path / "c", seed=7), base=tiny).lm.prompt.embedding.detach().clone()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert {"train_loss", "train_ppl", "eval_loss", "eval_ppl", "accuracy", "macro_f1"} <= records[-1].keys()
    assert (tmp_path / "a" / "curves.png").stat().st_size > 1000


def test_train_limit_and_max_steps_mid_epoch(tiny, tiny_dir, data_dir, tmp_path):
    """--train-limit keeps a stratified sample; a run that --max-steps ends mid-epoch still logs and saves
    its last step."""
    from softprompt.training.train import Trainer

    config = _config(tiny_dir, data_dir, tmp_path / "sample", train_limit=20, dev_fraction=0.0)
    trainer = Trainer.build(config, base=tiny)
    labels = [row["Label"] for row in trainer.train_rows]
    assert len(labels) == 20 and labels.count("complaint") == 7  # 17 of 50 in the file: the share is kept
    fit(_config(tiny_dir, data_dir, tmp_path / "short", max_steps=7), base=tiny)  # 5 steps per epoch
    records = [json.loads(line) for line in (tmp_path / "short" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 7] and "accuracy" in records[-1]
    assert checkpoint.latest_checkpoint(tmp_path / "short" / "checkpoints").name.endswith("7")
    with pytest.raises(SoftpromptError, match="^train_limit"):
        fit(_config(tiny_dir, data_dir, tmp_path / "bad", train_limit=-1), base=tiny)


def test_adafactor_keep_best_and_grad_accum(tiny, tiny_dir, data_dir, tmp_path):
    config = _config(
        tiny_dir,
        data_dir,
        tmp_path / "run",
        optimizer="adafactor",
        keep_best="loss",
        grad_accum=2,
        epochs=4,
        max_grad_norm=1.0,
    )
    tuned = fit(config, base=tiny)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    best = min(records, key=lambda r: r["eval_loss"])
    assert tuned.record.step == best["step"]
    assert torch.equal(_prompt(tmp_path / "run"), _prompt(tmp_path / "run" / "best"))
    assert records[0]["lr"] == pytest.approx(0.3)


@pytest.mark.portable  # --dtype auto: bfloat16 and prepacked where native, float32 on AVX2; bit for bit on either
def test_resume_after_sigkill_is_bit_identical(tiny_dir, data_dir, tmp_path, uninterrupted_run):
    """Kill a CLI training run mid-way, resume it, and get exactly the uninterrupted run's prompt. Each process
    runs one thread, as in test_crash.py (whose recipe and uninterrupted run, tests/resuming.py, this shares):
    under the AVX2 emulation on a loaded machine, two-thread float32 runs have parted in low bits (CI of
    2026-11-30), which is the kernels' doing, not the resume's."""
    proc = subprocess.Popen(train_args(tiny_dir, data_dir, tmp_path / "killed"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ONE_THREAD)  # fmt: skip
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(checkpoints.glob("step-0000002*")):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped_at = checkpoint.latest_checkpoint(checkpoints)
    assert stopped_at is not None and proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / checkpoint.WEIGHTS).exists()  # it really stopped before the end
    resumed = subprocess.run(
        [sys.executable, "-m", "softprompt", "train", "--resume", str(tmp_path / "killed")],
        capture_output=True,
        text=True,
        timeout=300,
        env=ONE_THREAD,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert torch.equal(_prompt(tmp_path / "killed"), _prompt(uninterrupted_run))
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # nothing logged twice across the kill


@pytest.mark.slow
def test_real_model_learns_twitter_complaints(smollm2, data_dir, tmp_path):
    """A short run of the seed recipe on the real default model lowers the held-out label loss."""
    config = TrainConfig(
        task="raft/twitter_complaints",
        data_dir=str(data_dir),
        dev_fraction=0.2,
        epochs=3,
        output=str(tmp_path / "run"),
        progress=False,
    )
    tuned = fit(config, base=smollm2)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["eval_loss"] < records[0]["eval_loss"]
    # The dev set fits one forward, so its evaluations ran the prompt inside it and cached nothing (the prompt
    # changed after each); the trained prompt is scored from its cache again.
    assert not tuned.lm.prompt_cache.heads()
    loaded = TunedPrompt.from_pretrained(tmp_path / "run", base=smollm2)
    assert torch.equal(loaded.lm.prompt.embedding, tuned.lm.prompt.embedding)
    rows = [{"Tweet text": "@united you lost my bag again, worst service ever"}, {"Tweet text": "what a lovely day"}]
    tuned.predict(rows)
    assert tuned.lm.prompt_cache.heads()
    predictions = loaded.predict(rows)
    assert [set(p["scores"]) for p in predictions] == [{"complaint", "no complaint"}] * 2
    assert all(p["label"] == max(p["scores"], key=p["scores"].get) for p in predictions)


def test_second_run_on_the_same_folder_is_refused(tiny, tiny_dir, data_dir, tmp_path):
    from softprompt.training.run_folder import RunFolder

    config = _config(tiny_dir, data_dir, tmp_path / "run", epochs=1)
    with RunFolder(tmp_path / "run").lock():  # another run holds the folder
        with pytest.raises(SoftpromptError, match="another training run is using this folder"):
            fit(config, base=tiny)
    fit(config, base=tiny)
    with pytest.raises(SoftpromptError, match="already holds a training run; pass resume"):
        fit(config, base=tiny)
    fit(config, base=tiny, overwrite=True)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # started over, not appended


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(tiny, tiny_dir, data_dir, tmp_path):
    from softprompt.utils.errors import SoftpromptError

    config = _config(tiny_dir, data_dir, tmp_path / "run", epochs=3, lr=float("inf"), weight_decay=0.0, save_steps=1)
    with pytest.raises(SoftpromptError, match="training diverged at step"):
        fit(config, base=tiny)
    assert not (tmp_path / "run" / checkpoint.WEIGHTS).exists()
    last = checkpoint.latest_checkpoint(tmp_path / "run" / "checkpoints")
    if last is not None:  # every kept checkpoint holds a finite prompt
        assert torch.isfinite(load_file(str(last / checkpoint.STATE_TENSORS))["prompt"]).all()


def test_an_occupied_output_is_refused_before_the_data_or_the_model_loads(tiny_dir, data_dir, tmp_path):
    """A folder that holds a run fails at once without resume/overwrite: the model reference here cannot load, and
    in a fresh folder the same config fails on it."""
    from softprompt.utils.errors import ParameterError

    config = _config(tiny_dir, data_dir, tmp_path / "run", model=str(tmp_path / "no-such-model"))
    with pytest.raises(ParameterError, match="model: .*no-such-model") as failed:
        fit(dataclasses.replace(config, output=str(tmp_path / "fresh")))
    assert failed.value.param == "model"
    assert not (tmp_path / "fresh").exists()  # a run that fails on its input leaves no folder behind
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 5}\n')
    with pytest.raises(ParameterError, match="already holds a training run") as refused:
        fit(config)
    assert refused.value.param == "output"
    assert str(refused.value) == (
        f"output: {tmp_path / 'run'} already holds a training run; pass resume to continue it, overwrite to start "
        "over, or another output"
    )


def test_overwrite_keeps_the_old_run_until_the_new_one_is_set_up(tiny, tiny_dir, data_dir, tmp_path):
    config = _config(tiny_dir, data_dir, tmp_path / "run", epochs=1)
    fit(config, base=tiny)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(SoftpromptError, match="no such file"):
        fit(dataclasses.replace(config, train=str(tmp_path / "missing.csv")), base=tiny, overwrite=True)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
    assert checkpoint.latest_checkpoint(tmp_path / "run" / "checkpoints") is not None


def test_a_checkpoint_from_before_the_epoch_closed_resumes_to_the_same_prompt(tiny, tiny_dir, data_dir, tmp_path,
                                                                               monkeypatch):  # fmt: skip
    """The trainer before the after-step rule could leave (if killed between its two saves of an epoch's last
    step) a checkpoint whose epoch was not closed; resumed, it closes the epoch and ends on the same prompt."""
    keep_all = functools.partial(checkpoint.save_checkpoint, keep=100)
    monkeypatch.setattr(checkpoint, "save_checkpoint", keep_all)
    config = _config(tiny_dir, data_dir, tmp_path / "straight", epochs=2)  # 5 steps per epoch
    fit(config, base=tiny)
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "step-00000005", old / "checkpoints" / "step-00000005")
    state_file = old / "checkpoints" / "step-00000005" / checkpoint.STATE_JSON
    state = json.loads(state_file.read_text())
    state["progress"].update(epoch=0, batch=5, logged=0)  # saved before the epoch closed and was evaluated
    state_file.write_text(json.dumps(state))
    fit(dataclasses.replace(config, output=str(old)), base=tiny, resume=True)
    assert torch.equal(_prompt(old), _prompt(tmp_path / "straight"))
    records = [json.loads(line) for line in (old / "metrics.jsonl").read_text().splitlines()]
    straight = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["epoch"], r["eval_loss"]) for r in records] == [
        (r["step"], r["epoch"], r["eval_loss"]) for r in straight
    ]
