"""Device placement, checked on the CPU so that a stray CPU tensor fails CI rather than a user's GPU run.

Every tensor softprompt makes in a forward, a training step, decoding or the server's batches must be made on
the model's device: a factory call (`torch.arange`, `torch.tensor`, `torch.zeros`, ...) without `device=` lands
on the CPU, which on a GPU means a device mismatch or a silent copy every step. `NoImplicitDevice` fails any
such call made from softprompt's own code, naming the file and line; transformers' and PyTorch's own calls
are theirs. Every path runs under it here: training with each init, prompt design and a design-initialised
prompt, model tuning, a checkpoint and resume, scoring in each mode (packed with its 4D masks, the prompt
cache, the mixed-prompt cache), greedy and sampled decoding, the server's batches, ensembles and inspect, on a
decoder-only model and an encoder-decoder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

import softprompt
from softprompt.data.batching import pad_left
from softprompt.data.tasks import Task
from softprompt.engine.prompted import ScoringMode
from softprompt.models.prompt import INITS, init_prompt
from softprompt.prompts.tuned import TunedPrompt
from softprompt.training.train import TrainConfig, fit

PACKAGE = str(Path(softprompt.__file__).parent)
FACTORIES = _device_constructors()
TASK = Task("Tweet text : {text} Label : ", "label", ["complaint", "no complaint"])
ROWS = [
    {"text": "lost my bag again", "label": "complaint"},
    {"text": "a lovely flight", "label": "no complaint"},
    {"text": "two hours at the gate", "label": "complaint"},
]


class NoImplicitDevice(TorchFunctionMode):
    """Fails a tensor factory called from softprompt's code without `device=`, naming the file and line."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(PACKAGE):
                name = getattr(func, "__name__", str(func))
                raise AssertionError(f"{caller.f_code.co_filename}:{caller.f_lineno}: torch.{name}() without device=")
        return func(*args, **kwargs)


def test_the_guard_catches_a_factory_without_a_device():
    """A planted `torch.arange(n)` in a package module fails; the same call with its device passes."""
    planted = compile("torch.arange(3)", f"{PACKAGE}/decoding.py", "exec")
    with NoImplicitDevice(), pytest.raises(AssertionError, match=r"decoding\.py:1: torch\.arange\(\) without device="):
        exec(planted, {"torch": torch})
    with NoImplicitDevice():
        exec(compile("torch.arange(3, device='cpu')", f"{PACKAGE}/decoding.py", "exec"), {"torch": torch})
        torch.arange(3)  # this test's own call is not softprompt's


def _config(tmp_path: Path, data_dir: Path, name: str, **overrides) -> TrainConfig:
    values = dict(train=str(data_dir / "raft_twitter_complaints/train.csv"), label_field="Label",
                  template="Tweet text : {Tweet text} Label : ", dev_fraction=0.25, train_limit=24,
                  num_virtual_tokens=3, max_steps=2, batch_size=4, eval_batch_size=8, output=str(tmp_path / name),
                  progress=False, device="cpu")  # fmt: skip
    return TrainConfig(**{**values, **overrides})


@pytest.mark.parametrize("init", [*INITS, "prompt-design"])
def test_training_makes_every_tensor_on_the_models_device(tiny, tmp_path, data_dir, init):
    config = _config(tmp_path, data_dir, init, init=init, init_text="Is this a complaint?", shots=2,
                     save_steps=1, keep_best="loss")  # fmt: skip
    with NoImplicitDevice():
        tuned = fit(config, base=tiny)
    assert tuned.lm.prompt.embedding.device == tiny[0].device


def test_checkpoint_resume_design_and_model_tuning(tiny, tiny_dir, tmp_path, data_dir):
    from softprompt.toolbox.prompt_design import run_design

    with NoImplicitDevice():
        fit(_config(tmp_path, data_dir, "run", save_steps=1, max_steps=1), base=tiny)
        fit(_config(tmp_path, data_dir, "run", save_steps=1, max_steps=3), base=tiny, resume=True)
        run_design(_config(tmp_path, data_dir, "design", shots=2), base=tiny)
        fit(_config(tmp_path, data_dir, "model", method="model-tuning", model=str(tiny_dir)))


def _prompts(base) -> list[TunedPrompt]:
    """Three prompts of different lengths on one base (a mixed batch pads the shorter ones' caches)."""
    model, tokenizer = base
    return [
        TunedPrompt.build(base, init_prompt(n, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=n), TASK)
        for n in (2, 5, 3)
    ]


@pytest.mark.parametrize("mode", list(ScoringMode))
@pytest.mark.parametrize("model", ["tiny", "t5"])
def test_scoring_and_decoding_make_every_tensor_on_the_models_device(request, model, mode):
    base = request.getfixturevalue(model)
    prompts = _prompts(base)
    first = prompts[0]
    rows = [first.encoder.input_ids(row) for row in ROWS] * 3
    owners = [p.lm for p in prompts for _ in ROWS]
    labels = [first.encoder.label_ids] * len(rows)
    ids = [[11, 12, 13], [14, 15]]
    with NoImplicitDevice():
        first.evaluate(ROWS, mode=mode, by_label=True)
        first.lm.score_rows(rows, labels, owners, mode=mode)
        first.lm.score_rows(rows[:4], labels[:4], mode=mode, batch_size=2)
        input_ids, mask = pad_left(ids, 0, device=first.lm.device)
        first.lm.generate(input_ids, mask, 3, None, mode=mode)
        first.lm.generate(input_ids, mask, 3, None, prompts=[prompts[0].lm, prompts[1].lm], mode=mode,
                          temperature=0.8, top_p=0.9, generator=torch.Generator(device="cpu").manual_seed(0),
                          observe=lambda rows, tokens, logprobs: None)  # fmt: skip


def test_server_batches_ensembles_and_inspect(tiny):
    from softprompt.serve.batcher import Job, _classify, _complete
    from softprompt.toolbox.ensemble import evaluate_ensemble
    from softprompt.toolbox.inspect import nearest_tokens

    prompts = _prompts(tiny)
    rows = [prompts[0].encoder.input_ids(row) for row in ROWS]
    params = {"max_tokens": 3, "temperature": 0.7, "top_p": 0.95, "seed": 1, "logprobs": 2}
    with NoImplicitDevice():
        _classify([Job("classify", tuned, rows) for tuned in prompts])
        _complete([Job("complete", tuned, rows[:2], {**params, "seed": seed}) for seed, tuned in enumerate(prompts)])
        stops = {"temperature": 0.0, "stop_ids": prompts[0].encoder.stop_ids}  # a text task's job (/v1/predict)
        _complete([Job("complete", tuned, rows[:2], {**params, **stops}) for tuned in prompts])
        evaluate_ensemble(prompts, ROWS, batch_size=4)
        nearest_tokens(prompts[1], k=2)
