"""Prompt design (the untrained baseline): K examples in front of each input, scored exactly as a tuned prompt.

The reference everywhere is the plain model on the plain token sequence (examples, then the row, then the
label), summed log-probabilities read off its logits: what GPT-3-style prompting means, with no softprompt code
in the way."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import torch

from softprompt.data.batching import Encoder
from softprompt.data.tasks import load_named
from softprompt.models.base import Base
from softprompt.models.prompt import SoftPrompt
from softprompt.prompts.demonstrations import demonstration_ids, demonstrations, draw_examples
from softprompt.prompts.evaluate import label_scores
from softprompt.prompts.tuned import TunedPrompt
from softprompt.toolbox.prompt_design import run_design
from softprompt.training.methods import make_tuned
from softprompt.training.train_config import TrainConfig
from softprompt.utils.errors import SoftpromptError


@pytest.fixture(scope="module")
def tweets(data_dir):
    task, rows, _ = load_named("raft/twitter_complaints", "train", data_dir)
    return task, rows


def _plain_scores(model, encoder: Encoder, prefix: list[int], rows) -> torch.Tensor:
    """[rows, labels]: each label's summed log-probability after `prefix` + the row, from the model's logits."""
    out = []
    for row in rows:
        context = prefix + encoder.input_ids(row)
        scores = []
        for label in encoder.label_ids:
            logprobs = model(torch.tensor([context + label])).logits[0].float().log_softmax(-1)
            scores.append(sum(logprobs[len(context) - 1 + j, t].item() for j, t in enumerate(label)))
        out.append(scores)
    return torch.tensor(out)


def _design_scores(model, tokenizer, task, train_rows, rows, shots: int, seed: int = 0):
    encoder = Encoder(task, tokenizer, 64)
    embeds, examples = demonstrations(model, encoder, train_rows, shots, seed)
    tuned = TunedPrompt.build(Base(model, tokenizer), SoftPrompt.frozen(embeds), task, 64)
    scores, _ = label_scores(tuned.lm, tuned.encoder, rows, batch_size=4)
    return scores, encoder, examples


@pytest.mark.parametrize("shots", [0, 3])
def test_design_scores_equal_the_plain_model_on_the_joined_text(tiny, tweets, shots):
    model, tokenizer = tiny
    task, rows = tweets
    scores, encoder, examples = _design_scores(model, tokenizer, task, rows[:30], rows[30:38], shots)
    assert len(examples) == shots
    prefix, _ = demonstration_ids(encoder, examples, context=10_000)
    assert len(prefix) > 0 if shots else prefix == []
    torch.testing.assert_close(scores, _plain_scores(model, encoder, prefix, rows[30:38]), atol=1e-4, rtol=1e-4)


def test_zero_shots_is_the_plain_template_on_the_real_model(smollm2, tweets):
    model, tokenizer = smollm2
    task, rows = tweets
    scores, encoder, _ = _design_scores(model, tokenizer, task, rows[:30], rows[30:34], shots=0)
    torch.testing.assert_close(scores, _plain_scores(model, encoder, [], rows[30:34]), atol=2e-4, rtol=1e-4)


def test_examples_are_seeded_stratified_and_never_crowd_out_the_row(tweets, tiny):
    task, rows = tweets
    first = draw_examples(rows, task, 6, seed=1)
    assert first == draw_examples(rows, task, 6, seed=1)
    assert first != draw_examples(rows, task, 6, seed=2)
    assert sorted(row["Label"] for row in first) == sorted(task.labels * 3)  # labels in turn
    encoder = Encoder(task, tiny[1], 64)
    everything, _ = demonstration_ids(encoder, first, context=10_000)
    # A context with room for the row and about two examples keeps whole examples only, the first ones.
    room = len(everything) // 3 + encoder.max_length
    ids, kept = demonstration_ids(encoder, first, context=room)
    assert 0 < kept < 6 and len(ids) + encoder.max_length <= room
    assert ids == demonstration_ids(encoder, first[:kept], context=10_000)[0]
    with pytest.raises(SoftpromptError, match="shots"):
        draw_examples(rows, task, len(rows) + 1, seed=0)


def _weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.float().numpy().tobytes())
    return digest.hexdigest()


def test_design_trains_nothing_and_saves_a_folder_eval_reads(tiny, tiny_dir, data_dir, tmp_path):
    model, tokenizer = tiny
    before = _weights_digest(model)
    config = TrainConfig(model=str(tiny_dir), task="raft/twitter_complaints", data_dir=str(data_dir),
                         dev_fraction=0.2, output=str(tmp_path / "design"), seed=3, dtype="float32",
                         shots=2)  # fmt: skip
    tuned = run_design(config, base=tiny)
    assert _weights_digest(model) == before  # the base is untouched
    assert not tuned.lm.prompt.embedding.requires_grad
    meta = json.loads((tmp_path / "design" / "softprompt.json").read_text())
    assert meta["method"] == "prompt-design" and meta["shots"] == 2 and len(meta["examples"]) == 2
    assert {"accuracy", "macro_f1", "majority_accuracy"} <= meta["metrics"].keys()
    done = subprocess.run(
        [sys.executable, "-m", "softprompt", "eval", str(tmp_path / "design"), "--task", "raft/twitter_complaints",
         "--data-dir", str(data_dir), "--split", "test", "--limit", "12", "--dtype", "float32"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    offline = TunedPrompt.from_pretrained(tmp_path / "design", base=tiny)
    _, test_rows, _ = load_named("raft/twitter_complaints", "test", data_dir)
    assert result["accuracy"] == offline.evaluate(test_rows[:12])["accuracy"]
    again = run_design(config, base=tiny, overwrite=True)  # the same seed, the same prompt
    assert torch.equal(again.lm.prompt.embedding, tuned.lm.prompt.embedding)
    with pytest.raises(SoftpromptError, match="already holds a prompt"):
        run_design(config, base=tiny)


def test_eval_reports_the_majority_class_beside_the_scores(tiny, tweets):
    model, tokenizer = tiny
    task, rows = tweets
    embeds, _ = demonstrations(model, Encoder(task, tokenizer), rows, 0, 0)
    tuned = TunedPrompt.build(Base(model, tokenizer), SoftPrompt.frozen(embeds), task)
    picked = [r for r in rows if r["Label"] == task.labels[0]][:3] + [r for r in rows if r["Label"] == task.labels[1]][
        :1
    ]
    result = tuned.evaluate(picked)
    assert result["majority_accuracy"] == 0.75
    assert result["majority_macro_f1"] == pytest.approx((2 * 3 / (2 * 3 + 1)) / 2)  # F1 of the constant label, / 2


def test_eval_sets_prompts_side_by_side_with_the_majority_class(smollm2, data_dir, tmp_path):
    """`softprompt eval A B` (the demo's last line): a JSON line per prompt, each what that prompt alone scores,
    and a table on stderr with both and the majority class; one base model loaded for both."""
    from softprompt.training.train import fit

    config = TrainConfig(model="smollm2-135m", task="raft/twitter_complaints", data_dir=str(data_dir),
                         dev_fraction=0.2, max_steps=2, dtype="float32", seed=5, shots=2, progress=False)  # fmt: skip
    tuned = fit(TrainConfig(**{**vars(config), "output": str(tmp_path / "tuned")}), base=smollm2)
    design = run_design(TrainConfig(**{**vars(config), "output": str(tmp_path / "design")}), base=smollm2)
    done = subprocess.run(
        [sys.executable, "-m", "softprompt", "eval", str(tmp_path / "tuned"), str(tmp_path / "design"), "--task",
         "raft/twitter_complaints", "--data-dir", str(data_dir), "--limit", "10", "--dtype", "float32"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    _, test_rows, _ = load_named("raft/twitter_complaints", "test", data_dir)
    for line, prompt, method in zip(lines, (tuned, design), ("prompt-tuning", "prompt-design"), strict=True):
        assert line["method"] == method and line["n"] == 10
        assert line["accuracy"] == prompt.evaluate(test_rows[:10])["accuracy"]
    table = done.stderr.splitlines()[-4:]
    assert table[0].split() == ["prompt", "method", "accuracy", "macro_f1"]
    assert table[1].startswith(str(tmp_path / "tuned")) and "prompt-design" in table[2]
    assert table[3].split()[:2] == ["majority", "class"] and float(table[3].split()[2]) == lines[0]["majority_accuracy"]


def test_prompt_tuning_from_the_design_starts_as_the_design_and_trains_it(tiny, tiny_dir, data_dir, tmp_path):
    """--init prompt-design: step 0 is prompt design's prompt, made trainable; training moves it, same shape."""
    from softprompt.data.loading import load_data
    from softprompt.training.train import fit

    config = TrainConfig(model=str(tiny_dir), task="raft/twitter_complaints", data_dir=str(data_dir),
                         dev_fraction=0.2, seed=3, dtype="float32", shots=2, init="prompt-design", max_steps=2,
                         output=str(tmp_path / "tuned"), progress=False)  # fmt: skip
    task, train_rows, _ = load_data(config)
    start = make_tuned(config, task, train_rows, base=tiny).lm.prompt.embedding
    design = run_design(TrainConfig(**{**vars(config), "output": str(tmp_path / "design")}), base=tiny)
    assert start.requires_grad and torch.equal(start, design.lm.prompt.embedding)
    tuned = fit(config, base=tiny)
    assert tuned.lm.prompt.embedding.shape == start.shape and not torch.equal(tuned.lm.prompt.embedding, start)
    assert tuned.record.init == "prompt-design" and tuned.record.shots == 2
    with pytest.raises(SoftpromptError, match="shots"):  # refused before any data or model loads
        TrainConfig(**{**vars(config), "shots": 0}).validate()


def test_prompt_tuning_from_the_design_on_the_real_model(smollm2, data_dir, tmp_path):
    """The real default model: the prompt is as long as the 4 examples' tokens, and a few steps lower the loss
    on the training rows below the design's it started from."""
    from softprompt.data.loading import load_data
    from softprompt.training.train import fit

    config = TrainConfig(model="smollm2-135m", task="raft/twitter_complaints", data_dir=str(data_dir),
                         dev_fraction=0.2, init="prompt-design", max_steps=3, lr=0.003, dtype="float32", seed=1,
                         output=str(tmp_path / "tuned"), progress=False)  # fmt: skip
    design = run_design(TrainConfig(**{**vars(config), "output": str(tmp_path / "design")}), base=smollm2)
    tuned = fit(config, base=smollm2)
    assert tuned.lm.n_prompt == design.lm.n_prompt > 4 * 10
    _, train_rows, _ = load_data(config)
    assert tuned.evaluate(train_rows)["loss"] < design.evaluate(train_rows)["loss"]
