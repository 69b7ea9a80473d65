"""The paper's toolbox on the real default model: ensembles in one forward, nearest-token inspection."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from softprompt.data.tasks import Task, load_named
from softprompt.models.base import Base
from softprompt.models.prompt import init_prompt
from softprompt.prompts.record import FolderRecord
from softprompt.prompts.tuned import TunedPrompt
from softprompt.toolbox.ensemble import combine, member_scores
from softprompt.toolbox.inspect import nearest_tokens

TWEETS = Task("Tweet text : {Tweet text} Label : ", "Label", ["complaint", "no complaint"])


def _member(smollm2, seed: int, n_tokens: int = 6) -> TunedPrompt:
    model, tokenizer = smollm2
    prompt = init_prompt(n_tokens, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=seed)
    return TunedPrompt.build(Base(model, tokenizer), prompt, TWEETS)


def test_ensemble_of_five_in_one_forward_votes_as_members_alone(smollm2, data_dir):
    members = [_member(smollm2, seed, n_tokens=4 + seed) for seed in range(5)]
    rows = load_named("raft/twitter_complaints", "test", data_dir)[1][:12]
    together = member_scores(members, rows, batch_size=40)
    assert together.shape == (5, 12, 2)
    for member, scores in zip(members, together):
        alone = torch.tensor([[p["scores"][label] for label in TWEETS.labels] for p in member.predict(rows)])
        assert torch.allclose(scores, alone, atol=1e-4)
        assert scores.argmax(-1).tolist() == alone.argmax(-1).tolist()


def test_vote_and_mean_modes():
    # three members, two rows, two labels (log-probabilities)
    scores = torch.log(torch.tensor([
        [[0.6, 0.4], [0.1, 0.9]],
        [[0.6, 0.4], [0.45, 0.55]],
        [[0.01, 0.99], [0.45, 0.55]],
    ]))  # fmt: skip
    assert combine(scores, "vote") == [0, 1]  # two of three members say label 0 for row 0
    assert combine(scores, "mean") == [1, 1]  # but member 3 is so sure that the mean goes to label 1


def test_class_label_prompt_lists_label_words_as_nearest(smollm2, tmp_path):
    model, tokenizer = smollm2
    task = Task("Review : {text} Sentiment : ", "label", ["positive", "negative"])
    prompt = init_prompt(6, model.get_input_embeddings(), tokenizer, "class-label", label_words=task.label_words)
    tuned = TunedPrompt.build(Base(model, tokenizer), prompt, task, record=FolderRecord(init="class-label"))
    report = nearest_tokens(tuned, k=3)
    for position, word in enumerate(task.label_words):
        nearest = report["positions"][position]["nearest"][0]
        assert nearest["token"].strip() == word and abs(nearest["cosine"] - 1) < 1e-4
    assert report["positions_near_a_label"] >= 2
    tuned.save_pretrained(tmp_path / "prompt")
    png = tmp_path / "near.png"
    done = subprocess.run([sys.executable, "-m", "softprompt", "inspect", str(tmp_path / "prompt"), "--json",
                           "--png", str(png)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["positions"][0]["nearest"][0]["token"].strip() == "positive"
    assert png.stat().st_size > 1000


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "softprompt", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_sweep_writes_csv_and_png_and_replots(tiny_dir, data_dir, tmp_path):
    out = tmp_path / "sweep"
    done = _cli("sweep", "--model", tiny_dir, "--train", data_dir / "raft_twitter_complaints/train.csv",
                "--template", "Tweet text : {Tweet text} Label : ", "--label-field", "Label", "--dev-fraction", "0.2",
                "--lengths", "1,3", "--inits", "random-uniform,class-label", "--seeds", "0,1", "--epochs", "1",
                "--test", data_dir / "raft_twitter_complaints/test_labeled_from_original.csv", "--test-limit", "40",
                "--output", out)  # fmt: skip
    assert done.returncode == 0, done.stderr
    import csv

    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [(r["num_virtual_tokens"], r["init"], r["seed"]) for r in rows] == [
        (n, init, seed) for n in ("1", "3") for init in ("random-uniform", "class-label") for seed in ("0", "1")
    ]
    assert all(r["n"] == "40" and 0 <= float(r["accuracy"]) <= 1 for r in rows)
    assert (out / "sweep.png").stat().st_size > 1000
    (out / "sweep.png").unlink()
    assert _cli("sweep", "--plot", out / "sweep.csv").returncode == 0
    assert (out / "sweep.png").stat().st_size > 1000
    bad = _cli("sweep", "--train", "x.csv", "--template", "{a}", "--label-field", "a", "--inits", "zeros",
               "--test", "x.csv")  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "softprompt: error:" in bad.stderr


def test_transfer_qqp_to_mrpc(tiny_dir, data_dir, tmp_path):
    done = _cli("transfer", "--model", tiny_dir, "--train", data_dir / "qqp_sample/train_subset.tsv",
                "--template", "Question 1: {question1} Question 2: {question2} Same? ", "--label-field",
                "is_duplicate", "--verbalizer", "0=no,1=yes", "--max-steps", "3", "--output", tmp_path / "qqp",
                "--target", data_dir / "mrpc/dev.tsv", "--target-limit", "50",
                "--target-map", "question1=#1 String,question2=#2 String,is_duplicate=Quality")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["n"] == 50 and {"accuracy", "macro_f1"} <= result.keys()
    bad = _cli("transfer", "--model", tiny_dir, "--train", data_dir / "qqp_sample/train_subset.tsv",
               "--template", "{question1}", "--label-field", "is_duplicate", "--output", tmp_path / "bad",
               "--target", data_dir / "mrpc/dev.tsv", "--target-map", "question1=#9 String")  # fmt: skip
    assert bad.returncode == 2 and "no column #9 String" in bad.stderr
