"""A task's `chat` option on the real default model: each input rendered as a user message by the tokenizer's
chat template with the assistant's turn opened, the soft prompt in front of it all, the label or target as the
reply. The option is saved with the prompt, and one row's ids are the same in training, in `softprompt
predict`/`eval` and through the server (its scores are those of exactly those ids). A long input is cut inside
the message's content; a model without a chat template is one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from softprompt.data.batching import Encoder
from softprompt.data.tasks import Task, load_named
from softprompt.prompts.tuned import TunedPrompt
from softprompt.serve.store import FOLDER_FILES
from softprompt.training.train import TrainConfig, Trainer

from .serving import ADMIN_TOKEN, call, zipped

TWEETS = "raft/twitter_complaints"
RECIPE = ["--task", TWEETS, "--chat", "--max-length", "128", "--train-limit", "12", "--dev-fraction", "0",
          "--num-virtual-tokens", "4", "--max-steps", "2", "--batch-size", "4", "--seed", "3", "--dtype", "float32",
          "--no-progress"]  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "softprompt", *args], capture_output=True, text=True, timeout=300)


def _templated(tokenizer, task: Task, row: dict) -> list[int]:
    """The row as the tokenizer's own chat template renders its input as one user message, tokenised whole."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": task.render(row)}], tokenize=False,
                                         add_generation_prompt=True)  # fmt: skip
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _upload(folder) -> bytes:
    """A trained run's prompt files, zipped for the admin route (its checkpoints and plots stay behind)."""
    return zipped({name: (folder / name).read_bytes() for name in FOLDER_FILES if (folder / name).is_file()})


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat") / "tweets-chat"
    done = _cli("train", *RECIPE, "--output", str(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def test_the_option_is_saved_and_rows_render_through_the_template(chat_run, smollm2):
    tuned = TunedPrompt.from_pretrained(chat_run, base=smollm2)
    assert tuned.task.chat and json.loads((chat_run / "softprompt.json").read_text())["task"]["chat"] is True
    assert "Trained with `chat`" in (chat_run / "README.md").read_text()  # the model card says how to render rows
    row = load_named(TWEETS, "test")[1][0]
    ids = tuned.encoder.input_ids(row)
    assert ids == _templated(smollm2[1], tuned.task, row)
    assert ids[: len(tuned.encoder.chat_before)] == tuned.encoder.chat_before  # the template's system turn first
    raw = Encoder(Task.from_json({**tuned.task.to_json(), "chat": False}), smollm2[1], 128).input_ids(row)
    assert raw != ids and "chat" not in Task.from_json({**tuned.task.to_json(), "chat": False}).to_json()


def test_one_rows_ids_are_the_same_in_training_eval_and_the_server(chat_run, smollm2, smollm2_server, tmp_path):
    """Training's encoded row is the template's; `predict` and `/v1/classify` score exactly those ids (their
    label scores equal `score_rows` on them within 1e-4, and differ from the raw rendering's)."""
    tuned = TunedPrompt.from_pretrained(chat_run, base=smollm2)
    config = TrainConfig(task=TWEETS, chat=True, max_length=128, train_limit=12, dev_fraction=0.0,
                         num_virtual_tokens=4, seed=3, dtype="float32", output=str(tmp_path / "run"))  # RECIPE's
    trainer = Trainer.build(config, base=smollm2)
    assert trainer.encoded[0][0] == _templated(smollm2[1], tuned.task, trainer.train_rows[0])
    rows = load_named(TWEETS, "test")[1][:3]
    ids = [_templated(smollm2[1], tuned.task, row) for row in rows]
    offline = [v for s in tuned.lm.score_rows(ids, [tuned.encoder.label_ids] * len(ids)) for v in s.tolist()]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    done = _cli("predict", str(chat_run), "--data", str(data), "--output", str(tmp_path / "p.jsonl"), "--dtype",
                "float32", "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    predicted = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    labels = tuned.task.labels
    assert [p["scores"][label] for p in predicted for label in labels] == pytest.approx(offline, abs=1e-4)
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/zip"}
    assert call(smollm2_server + "/v1/tasks/tweets-chat", "PUT", headers=auth, raw=_upload(chat_run))[0] == 200
    try:
        status, body, _ = call(smollm2_server + "/v1/classify", "POST",
                               {"task": "tweets-chat", "inputs": rows, "return_scores": True})  # fmt: skip
    finally:
        assert call(smollm2_server + "/v1/tasks/tweets-chat", "DELETE", headers=auth)[0] == 200
    assert status == 200, body
    assert [s[label] for s in body["scores"] for label in labels] == pytest.approx(offline, abs=1e-4)
    raw = [tuned.tokenizer(tuned.task.render(row))["input_ids"] for row in rows]
    assert tuned.lm.score_rows(raw, [tuned.encoder.label_ids] * 3)[0].tolist() != pytest.approx(offline[:2], abs=1e-3)


def test_a_long_input_is_cut_inside_the_message(smollm2):
    task = Task("Tweet text : {text} Label :", "label", ["complaint", "no complaint"], chat=True)
    encoder = Encoder(task, smollm2[1], max_length=64)
    ids = encoder.input_ids({"text": "my bag is lost and nobody answers " * 20})
    assert len(ids) + max(map(len, encoder.label_ids)) <= 64
    assert ids[: len(encoder.chat_before)] == encoder.chat_before
    assert ids[-len(encoder.chat_after) :] == encoder.chat_after
    assert smollm2[1].decode(ids[: -len(encoder.chat_after)]).endswith(" Label :")  # the template's tail kept


def test_chat_on_a_model_without_a_template_is_one_line(llama_dir, tmp_path):
    done = _cli("train", *RECIPE, "--model", str(llama_dir), "--output", str(tmp_path / "run"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("softprompt: error:")
    assert sum("error" in line for line in done.stderr.splitlines()) == 1
    assert "has no chat template" in done.stderr and "chat" in done.stderr
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*.safetensors"))
