"""Model tuning (`--method model-tuning`), the paper's upper baseline: every weight trains, on the same data, loss
and evaluation as prompt tuning; the run saves a Hugging Face model folder that eval reads; resume is exact."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from softprompt.data.tasks import load_named
from softprompt.models.base import load_base
from softprompt.prompts import checkpoint
from softprompt.prompts.tuned import TunedPrompt
from softprompt.training.train import TrainConfig, fit


def _config(tiny_dir, data_dir, output, **overrides) -> TrainConfig:
    values = dict(model=str(tiny_dir), task="raft/twitter_complaints", data_dir=str(data_dir), dev_fraction=0.2,
                  method="model-tuning", lr=1e-3, max_steps=4, batch_size=8, save_steps=1, output=str(output),
                  progress=False)  # fmt: skip
    return TrainConfig(**{**values, **overrides})


def _weights(model) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters()}


@pytest.fixture(scope="module")
def tuned_run(tiny_dir, data_dir, tmp_path_factory) -> tuple[dict[str, torch.Tensor], TunedPrompt, Path]:
    """(weights before, the tuned model, its folder) of one 4-step model-tuning run of the tiny model, made once
    for the tests below, which only read the folder (the resume test copies it)."""
    base = load_base(str(tiny_dir), "float32")  # its own copy: the run changes it
    before = _weights(base[0])
    folder = tmp_path_factory.mktemp("model-tuning") / "run"
    return before, fit(_config(tiny_dir, data_dir, folder), base=base), folder


def test_model_tuning_trains_every_weight_and_saves_a_model_folder(tuned_run, data_dir):
    before, tuned, folder = tuned_run
    after = _weights(tuned.lm.model)
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert len(changed) == len(before), set(before) - set(changed)  # every weight moved, embeddings included
    assert tuned.lm.n_prompt == 0
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not (folder / checkpoint.WEIGHTS).exists()  # a model folder, not a prompt folder
    assert json.loads((folder / checkpoint.META).read_text())["method"] == "model-tuning"
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert {"train_loss", "eval_loss", "accuracy", "macro_f1"} <= records[-1].keys()
    # eval reads the folder as it reads a prompt, and scores what was trained
    loaded = TunedPrompt.from_pretrained(folder, dtype="float32")
    for name, value in _weights(loaded.lm.model).items():
        torch.testing.assert_close(value, after[name], rtol=0, atol=0)
    done = subprocess.run(
        [sys.executable, "-m", "softprompt", "eval", str(folder), "--task", "raft/twitter_complaints",
         "--data-dir", str(data_dir), "--split", "test", "--limit", "8", "--dtype", "float32"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    _, rows, _ = load_named("raft/twitter_complaints", "test", data_dir)
    assert json.loads(done.stdout)["loss"] == loaded.evaluate(rows[:8])["loss"]


def test_model_tuning_resumes_bit_for_bit(tuned_run, tiny_dir, data_dir, tmp_path):
    _, straight, folder = tuned_run
    # The same run, stopped after its third step: its newest checkpoint removed with everything written after
    killed = tmp_path / "killed"
    shutil.copytree(folder, killed)
    shutil.rmtree(killed / "checkpoints" / "step-00000004")
    for name in ("config.json", "model.safetensors", checkpoint.META, "curves.png"):
        (killed / name).unlink(missing_ok=True)
    config = _config(tiny_dir, data_dir, killed)
    resumed = fit(config, base=load_base(str(tiny_dir), "float32"), resume=True)
    a, b = _weights(straight.lm.model), _weights(resumed.lm.model)
    assert all(torch.equal(a[name], b[name]) for name in a)
    state = load_file(str(killed / "checkpoints" / "step-00000004" / checkpoint.STATE_TENSORS))
    assert "prompt" not in state and sum(name.startswith("model.") for name in state) == len(a)


def test_real_model_tuning_moves_the_default_model(data_dir, tmp_path):
    """Two steps on SmolLM2-135M: every weight moves, and the dev loss is scored from the trained weights."""
    base = load_base("smollm2-135m", "float32")
    before = _weights(base[0])
    config = _config("smollm2-135m", data_dir, tmp_path / "real", max_steps=2, batch_size=4, save_steps=0)
    tuned = fit(config, base=base)
    after = _weights(tuned.lm.model)
    assert all(not torch.equal(before[name], after[name]) for name in before)
    records = [json.loads(line) for line in (tmp_path / "real" / "metrics.jsonl").read_text().splitlines()]
    assert torch.isfinite(torch.tensor(records[-1]["eval_loss"]))
    assert (tmp_path / "real" / "model.safetensors").stat().st_size > 400e6  # all 135M weights, float32


def test_model_tuning_that_cannot_fit_fails_before_training(tiny_dir, data_dir, tmp_path, monkeypatch):
    """Gradients and AdamW's moments need three more float32 copies of the weights: asked for up front."""
    from softprompt.training import methods
    from softprompt.utils.errors import ParameterError

    monkeypatch.setattr(methods, "available_bytes", lambda: 1000)
    with pytest.raises(ParameterError, match=r"^method: model-tuning .* needs about .* GB more") as err:
        fit(_config(tiny_dir, data_dir, tmp_path / "run"), base=load_base(str(tiny_dir), "float32"))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_the_memory_check_counts_what_the_optimizer_really_keeps(tiny_dir, optimizer):
    """optimizer_bytes is the gradients plus the state the optimizer holds after a step: AdamW's two moments,
    Adafactor's factored second moment (the paper's model tuning; far smaller, so 1.5B fits in 24 GB)."""
    import torch

    from softprompt.training.methods import optimizer_bytes

    model = load_base(str(tiny_dir), "float32").model
    model.requires_grad_(True)
    params = [p for p in model.parameters()]
    make = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adafactor
    step = make(params, lr=1e-3)
    for param in params:
        param.grad = torch.ones_like(param)
    step.step()
    state = sum(value.numel() * value.element_size() for slots in step.state.values() for value in slots.values()
                if torch.is_tensor(value) and value.dim() > 0)  # fmt: skip
    grads = sum(param.grad.numel() * param.grad.element_size() for param in params)
    assert optimizer_bytes(model, optimizer) == grads + state
    weights = sum(param.numel() * 4 for param in params)
    assert (state < 0.1 * weights) if optimizer == "adafactor" else (state == 2 * weights)


def test_a_model_folder_holding_only_a_pickle_is_refused_unread(tiny_dir, tmp_path, monkeypatch):
    """Weights are read from safetensors only: a model folder whose weights are a pickle gets one line."""
    from softprompt.utils.errors import ParameterError

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_dir, folder)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle was read"))
    with pytest.raises(ParameterError, match=r"^model: .*pickled") as err:
        load_base(str(folder), "float32")
    assert "\n" not in str(err.value)
