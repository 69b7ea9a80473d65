"""Tuning as a service, driven by the official `openai` SDK alone against a real server on loopback (the real
default model): a file uploaded, a job created, polled to success, its events listed, its task answering
completions and classifying as offline `predict` does; its prompt `torch.equal` to `softprompt train`'s with
the same rows, recipe and seed, with and without traffic during the job, and after a `kill -9` and restart;
bad uploads and jobs refused with a 400 naming the problem while the server keeps serving; writes refused
without the token."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import openai
import pytest
import torch

from softprompt.prompts import checkpoint
from softprompt.prompts.tuned import TunedPrompt
from softprompt.training.train import TrainConfig, fit

from .serving import ADMIN_TOKEN, call, running_server

TEMPLATE = "Tweet text : {text} Label : "
RECIPE = {"template": TEMPLATE, "label_field": "label", "labels": ["complaint", "no complaint"],
          "num_virtual_tokens": 4}  # fmt: skip
HYPER = {"n_epochs": 2, "batch_size": 4}  # 16 rows: 8 steps


def _tweets(data_dir: Path, count: int = 16) -> list[dict]:
    with open(data_dir / "raft_twitter_complaints" / "train.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:count]
    return [{"text": row["Tweet text"], "label": row["Label"]} for row in rows]


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory, prompts):
    """A server of its own (its published tasks stay out of the session server's list), on a copy of the
    session's prompts, with a file limit of 20,000 bytes."""
    root = tmp_path_factory.mktemp("tuning")
    shutil.copytree(prompts, root / "prompts")
    (root / "token").write_text(ADMIN_TOKEN)
    extra = ("--admin-token-file", str(root / "token"), "--max-file-bytes", "20000")
    with running_server("smollm2-135m", root / "prompts", *extra) as url:
        yield url, root / "prompts"


def _client(url: str, key: str = ADMIN_TOKEN) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)


def _finished(client: openai.OpenAI, job_id: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job still {job.status}"
        time.sleep(0.5)


def _reference(job, output: Path) -> torch.Tensor:
    """`softprompt train` (its library call) with the job's own recipe, rows and seed, elsewhere."""
    config = TrainConfig.from_dict({**job.softprompt["recipe"], "output": str(output)}, "job recipe")
    fit(config)
    return checkpoint.load_prompt(output)[0]


def _published(prompts: Path, job) -> torch.Tensor:
    return checkpoint.load_prompt(prompts / job.fine_tuned_model)[0]


@pytest.fixture(scope="module")
def trained(server, data_dir, tmp_path_factory):
    """One job through the SDK, start to end, and `softprompt train`'s prompt for the same recipe."""
    url, prompts = server
    client = _client(url)
    upload = client.files.create(file=("tweets.jsonl", _jsonl(_tweets(data_dir))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=upload.id, hyperparameters=HYPER,
                                         suffix="tweets", seed=7, extra_body={"softprompt": RECIPE})  # fmt: skip
    assert job.status == "queued" and job.fine_tuned_model is None
    done = _finished(client, job.id)
    assert done.status == "succeeded", done.error
    return upload, done, _reference(done, tmp_path_factory.mktemp("reference") / "run")


def test_a_job_made_with_the_sdk_alone_is_served_as_offline_predict_serves_it(server, trained, smollm2, data_dir):
    url, prompts = server
    client = _client(url)
    upload, job, reference = trained
    assert job.fine_tuned_model.startswith("ft-smollm2-135m-tweets-") and job.trained_tokens > 0
    assert client.files.retrieve(upload.id).filename == "tweets.jsonl"
    assert upload.id in [f.id for f in client.files.list()]
    assert job.id in [j.id for j in client.fine_tuning.jobs.list()]
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    steps = [e.data["step"] for e in events if e.type == "metrics" and "train_loss" in e.data]
    assert steps == list(range(8, 0, -1))  # newest first, one per step
    assert all(e.data["train_loss"] > 0 for e in events if e.type == "metrics")
    assert events[0].message.startswith("Published")
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)] == [8, 4]
    assert job.fine_tuned_model in [m.id for m in client.models.list()]
    answer = client.completions.create(model=job.fine_tuned_model, prompt=TEMPLATE.format(text="my bag is lost"),
                                       max_tokens=4, temperature=0)  # fmt: skip
    assert answer.choices[0].text and answer.usage.completion_tokens > 0
    rows = [{"text": row["text"]} for row in _tweets(data_dir, 24)[16:]]
    status, served, _ = call(url + "/v1/classify", "POST", {"task": job.fine_tuned_model, "inputs": rows})
    assert status == 200, served
    offline = TunedPrompt.from_pretrained(prompts / job.fine_tuned_model, base=smollm2).predict(rows)
    assert served["labels"] == [p["label"] for p in offline]
    assert torch.equal(_published(prompts, job), reference)


def test_traffic_during_a_job_leaves_its_prompt_unchanged(server, trained, data_dir):
    url, prompts = server
    client = _client(url)
    upload, first, reference = trained
    answered, stop = [], threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            status, _, _ = call(url + "/v1/classify", "POST", {"task": "tweets", "inputs": ["lost my bag"] * 4})
            answered.append((time.monotonic(), status))

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        job = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=upload.id, hyperparameters=HYPER,
                                             seed=7, extra_body={"softprompt": RECIPE})  # fmt: skip
        started = time.monotonic()
        done = _finished(client, job.id)
        ended = time.monotonic()
    finally:
        stop.set()
        thread.join()
    assert done.status == "succeeded", done.error
    during = [status for at, status in answered if started < at < ended]
    assert len(during) >= 3 and set(during) == {200}  # the server kept answering while it trained
    assert torch.equal(_published(prompts, done), reference)
    assert done.fine_tuned_model != first.fine_tuned_model


def test_a_job_killed_with_the_server_resumes_on_restart_to_the_same_prompt(prompts, data_dir, tmp_path):
    root = tmp_path / "prompts"
    shutil.copytree(prompts, root)
    (tmp_path / "token").write_text(ADMIN_TOKEN)
    extra = ("--admin-token-file", str(tmp_path / "token"))
    recipe = {**RECIPE, "save_steps": 2}
    with running_server("smollm2-135m", root, *extra) as url:
        client = _client(url)
        upload = client.files.create(file=("t.jsonl", _jsonl(_tweets(data_dir, 32))), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=upload.id, seed=3,
                                             hyperparameters={"n_epochs": 2, "batch_size": 4},
                                             extra_body={"softprompt": recipe})  # fmt: skip
        deadline = time.monotonic() + 300
        while not list((root / ".jobs" / job.id / "run" / "checkpoints").glob("step-0000000[4-9]")):
            assert time.monotonic() < deadline and client.fine_tuning.jobs.retrieve(job.id).status != "succeeded"
            time.sleep(0.2)
        pid = call(url + "/healthz")[1]["pid"]
        os.kill(pid, signal.SIGKILL)
        time.sleep(1)
    with running_server("smollm2-135m", root, *extra) as url:
        client = _client(url)
        done = _finished(client, job.id)
        events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=200)]
    assert done.status == "succeeded", done.error
    assert "Resumed from the last checkpoint" in events
    assert sum("/16: training loss=" in m for m in events) == 16  # no step reported twice
    assert torch.equal(_published(root, done), _reference(done, tmp_path / "reference"))


def test_bad_uploads_and_jobs_are_400s_naming_the_problem_and_serving_goes_on(server, trained, data_dir):
    url, prompts = server
    client = _client(url)
    jobs_before = sorted((prompts / ".jobs").iterdir())
    broken = _jsonl(_tweets(data_dir, 2)) + b'{"text": "half a line"\n'
    with pytest.raises(openai.BadRequestError, match="line 3: not JSON"):
        client.files.create(file=("broken.jsonl", broken), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError, match="over this server's limit of 20000"):
        client.files.create(file=("big.jsonl", b'{"text": "x"}\n' * 2000), purpose="fine-tune")
    odd = client.files.create(file=("odd.jsonl", _jsonl([*_tweets(data_dir, 3), {"text": "hm", "label": "maybe"}])),
                              purpose="fine-tune")  # fmt: skip
    with pytest.raises(openai.BadRequestError, match=f"{odd.id}.*maybe"):
        client.fine_tuning.jobs.create(model="smollm2-135m", training_file=odd.id, extra_body={"softprompt": RECIPE})
    with pytest.raises(openai.BadRequestError, match="softprompt.dropout"):
        client.fine_tuning.jobs.create(model="smollm2-135m", training_file=odd.id, extra_body={"softprompt": {
            **RECIPE, "dropout": 0.1}})  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="model: 'gpt-4o-mini' is neither this server's base"):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=odd.id, extra_body={"softprompt": RECIPE})
    with pytest.raises(openai.BadRequestError, match="training_file: no file 'file-nope'"):
        client.fine_tuning.jobs.create(model="smollm2-135m", training_file="file-nope")
    with pytest.raises(openai.UnprocessableEntityError, match="n_epochs.*greater than or equal to 1"):
        client.fine_tuning.jobs.create(model="smollm2-135m", training_file=odd.id, hyperparameters={"n_epochs": 0},
                                       extra_body={"softprompt": RECIPE})  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="the job takes 5000000 steps; this server takes 1 to 5000"):
        client.fine_tuning.jobs.create(model="smollm2-135m", training_file=trained[0].id,
                                       extra_body={"softprompt": {**RECIPE, "max_steps": 5_000_000}})  # fmt: skip
    assert call(url + "/v1/classify", "POST", {"task": "tweets", "inputs": ["my bag"]})[0] == 200
    assert sorted((prompts / ".jobs").iterdir()) == jobs_before  # a refused job leaves nothing behind


def test_writes_need_the_token_and_a_cancelled_job_publishes_nothing(server, trained, data_dir):
    url, prompts = server
    stranger = _client(url, "not-the-token-0123456789")
    upload, job, _ = trained
    with pytest.raises(openai.AuthenticationError):
        stranger.files.create(file=("t.jsonl", _jsonl(_tweets(data_dir, 2))), purpose="fine-tune")
    with pytest.raises(openai.AuthenticationError):
        stranger.fine_tuning.jobs.create(model="smollm2-135m", training_file=upload.id)
    with pytest.raises(openai.AuthenticationError):  # before the body is checked: no schema details without it
        stranger.fine_tuning.jobs.create(model="smollm2-135m", training_file=upload.id, hyperparameters={"n_epochs": 0})
    with pytest.raises(openai.AuthenticationError):
        stranger.fine_tuning.jobs.cancel(job.id)
    assert stranger.fine_tuning.jobs.retrieve(job.id).status == "succeeded"  # reading needs no token here
    client = _client(url)
    long = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=upload.id,
                                          hyperparameters={"n_epochs": 50, "batch_size": 2},
                                          extra_body={"softprompt": RECIPE})  # fmt: skip
    with pytest.raises(openai.BadRequestError, match=f"file {upload.id}: job {long.id} reads it"):
        client.files.delete(upload.id)
    assert client.fine_tuning.jobs.cancel(long.id).status in ("queued", "running", "cancelled")
    done = _finished(client, long.id)
    assert done.status == "cancelled" and done.fine_tuned_model is None
    assert not (prompts / long.softprompt["task"]).exists()


def test_a_validation_file_gives_held_out_metrics_beside_the_majority_class_and_prompt_design(server, data_dir):
    url, prompts = server
    client = _client(url)
    tweets = _tweets(data_dir, 40)
    train = client.files.create(file=("train.jsonl", _jsonl(tweets[:16])), purpose="fine-tune")
    held = client.files.create(file=("dev.jsonl", _jsonl(tweets[24:40])), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="smollm2-135m", training_file=train.id, validation_file=held.id,
                                         hyperparameters={"n_epochs": 1, "batch_size": 8},
                                         extra_body={"softprompt": {**RECIPE, "shots": 2}})  # fmt: skip
    done = _finished(client, job.id)
    assert done.status == "succeeded", done.error
    record = json.loads((prompts / done.fine_tuned_model / "softprompt.json").read_text())
    source = f"validation file {held.id}"
    figures = record["evaluations"]
    assert set(figures) == {source, f"{source}: majority class", f"{source}: prompt design, 2 demonstrations"}
    labels = [row["label"] for row in tweets[24:40]]
    majority = max(set(labels), key=labels.count)
    assert figures[f"{source}: majority class"]["accuracy"] == labels.count(majority) / len(labels)
    assert figures[source]["n"] == 16 and 0 <= figures[f"{source}: prompt design, 2 demonstrations"]["macro_f1"] <= 1
    card = (prompts / done.fine_tuned_model / "README.md").read_text()
    assert "majority class" in card and "prompt design, 2 demonstrations" in card
    evaluated = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=50) if e.data and "eval_loss" in e.data]
    assert [e.data["step"] for e in evaluated] == [2] and evaluated[0].message.startswith("Step 2: eval_loss=")
    held_out = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=50) if e.data and "held_out" in e.data]
    assert len(held_out) == 1 and "majority class: accuracy=" in held_out[0].message


def test_a_job_can_start_from_a_served_task_and_train_its_prompt_on(server, trained, tmp_path):
    url, prompts = server
    client = _client(url)
    upload, first, _ = trained
    job = client.fine_tuning.jobs.create(model=first.fine_tuned_model, training_file=upload.id, suffix="more",
                                         hyperparameters={"n_epochs": 1, "batch_size": 8})  # fmt: skip
    recipe = job.softprompt["recipe"]
    assert (recipe["template"], recipe["label_field"]) == (TEMPLATE, "label")  # the task's own, not restated
    assert torch.equal(checkpoint.load_prompt(recipe["init_from"])[0], _published(prompts, first))
    done = _finished(client, job.id)
    assert done.status == "succeeded", done.error
    again = _published(prompts, done)
    assert again.shape == _published(prompts, first).shape and not torch.equal(again, _published(prompts, first))
    assert torch.equal(again, _reference(done, tmp_path / "reference"))
