"""`/v1/predict` on a real server on loopback with the real default model: two text-to-text tasks and a
classification task served together. Text answers equal offline greedy `predict`, classification answers equal
`/v1/classify`'s, requests of both kinds share one batch, bad requests get one line naming the field, and
`predict --server` writes the offline file. Also, in process: text tasks that stop alike decode in one pass."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from softprompt.data.tasks import Task
from softprompt.models.base import Base
from softprompt.models.prompt import init_prompt
from softprompt.prompts.predictions import write_predictions
from softprompt.prompts.record import FolderRecord
from softprompt.prompts.tuned import TunedPrompt

from .serving import TASKS, call, rows_for, running_server

TEXT_TASKS = {
    "answer": Task("Question: {question}\nAnswer:", target_field="answer", references_field="answers",
                   max_new_tokens=12),
    "french": Task("English: {text}\nFrench:", target_field="french", max_new_tokens=10),
}
QUESTIONS = [
    {"question": "What is the capital of France?", "answer": "Paris", "answers": '["Paris", "paris"]'},
    {"question": "Who wrote Hamlet?", "answer": "William Shakespeare", "answers": '["Shakespeare"]'},
    {"question": "How many legs does a spider have?"},  # no target: predicted, not scored
]
SENTENCES = [{"text": "The cat sleeps on the mat."}, {"text": "Where is the train station?"}]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, smollm2):
    """The two text tasks and the two-field classification task `pairs`, as prompt folders (seeded, untrained)."""
    model, tokenizer = smollm2
    root = tmp_path_factory.mktemp("predict-prompts")
    tasks = {**TEXT_TASKS, "pairs": TASKS["pairs"][0]}
    for seed, (name, task) in enumerate(tasks.items()):
        prompt = init_prompt(4, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=seed)
        tuned = TunedPrompt.build(Base(model, tokenizer), prompt, task, record=FolderRecord(init="sampled-vocab"))
        tuned.save_pretrained(root / name)
    return root


@pytest.fixture(scope="module")
def server(folders):
    """Batches wait up to 300 ms, so requests sent together surely meet in one."""
    with running_server("smollm2-135m", folders, "--max-wait-ms", "300") as url:
        yield url


PAIRS = rows_for("pairs", 3)
ROWS = {"answer": QUESTIONS, "french": SENTENCES, "pairs": PAIRS}


@pytest.fixture(scope="module")
def offline(folders, smollm2) -> dict[str, list[dict]]:
    """Offline `predict` (greedy) of each task's ROWS: what the server must answer."""
    return {name: TunedPrompt.from_pretrained(folders / name, base=smollm2).predict(ROWS[name]) for name in ROWS}


def _texts(predictions: list[dict]) -> list[str]:
    return [p["prediction"] for p in predictions]


def _outputs(reply: dict) -> list[str]:
    return [output["text"] for output in reply["outputs"]]


def test_text_answers_equal_offline_greedy_predict(server, folders, smollm2, offline):
    from softprompt.serve.store import prompt_version

    status, body, _ = call(server + "/v1/predict", "POST", {"task": "answer", "rows": QUESTIONS})
    assert status == 200, body
    assert _outputs(body) == _texts(offline["answer"])
    assert any(_texts(offline["answer"]))  # something was written, so the comparison means something
    tuned = TunedPrompt.from_pretrained(folders / "answer", base=smollm2)
    assert body["prompt_version"] == prompt_version(tuned) and body["task"] == "answer"
    usage = body["usage"]
    assert usage["prompt_tokens"] == sum(len(tuned.encoder.input_ids(row)) for row in QUESTIONS)
    assert 0 < usage["completion_tokens"] <= 12 * len(QUESTIONS)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    by_model = call(server + "/v1/predict", "POST", {"model": "french", "rows": SENTENCES})[1]  # `model` names it too
    assert _outputs(by_model) == _texts(offline["french"])
    shorter = call(server + "/v1/predict", "POST", {"task": "answer", "rows": QUESTIONS[:1], "max_new_tokens": 2})[1]
    assert shorter["usage"]["completion_tokens"] <= 2


def test_classification_answers_as_classify_does(server, offline):
    status, body, _ = call(server + "/v1/predict", "POST", {"task": "pairs", "rows": PAIRS, "return_scores": True})
    assert status == 200, body
    classified = call(server + "/v1/classify", "POST", {"task": "pairs", "inputs": PAIRS, "return_scores": True})[1]
    assert body == classified
    assert body["labels"] == [p["label"] for p in offline["pairs"]]
    assert call(server + "/v1/predict", "POST", {"task": "pairs", "rows": PAIRS[:1]})[1]["scores"] is None


def _batches(url: str) -> tuple[float, float]:
    """(batches taken, rows in them) so far, from /metrics."""
    lines = call(url + "/metrics")[1].splitlines()
    value = {line.split()[0]: float(line.split()[-1]) for line in lines if line.startswith("softprompt_batch_rows_")}
    return value["softprompt_batch_rows_count"], value["softprompt_batch_rows_sum"]


def test_requests_of_both_kinds_and_several_tasks_share_one_batch(server, offline):
    requests = [
        {"task": "answer", "rows": QUESTIONS[:2]},
        {"task": "french", "rows": SENTENCES},
        {"task": "pairs", "rows": PAIRS[:2], "return_scores": True},
    ]
    for name in ("answer", "french"):  # each text task's stop tokens found, so neither is slow to reach the queue
        warm = {"task": name, "rows": ROWS[name][:1], "max_new_tokens": 1}
        assert call(server + "/v1/predict", "POST", warm)[0] == 200
    before = _batches(server)
    with ThreadPoolExecutor(len(requests)) as pool:
        replies = list(pool.map(lambda body: call(server + "/v1/predict", "POST", body), requests))
    after = _batches(server)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 6)  # one batch held all three requests' rows
    answer, french, pairs = (reply[1] for reply in replies)
    assert _outputs(answer) == _texts(offline["answer"][:2])
    assert _outputs(french) == _texts(offline["french"])
    assert pairs["labels"] == [p["label"] for p in offline["pairs"][:2]]


def test_tasks_listing_says_each_kind(server):
    tasks = {t["name"]: t for t in call(server + "/v1/tasks")[1]}
    kinds = {name: t["kind"] for name, t in tasks.items()}
    assert kinds == {"answer": "text", "french": "text", "pairs": "classification"}
    assert tasks["answer"]["text"] == {"target_field": "answer", "target_template": None, "references_field": "answers",
                                       "max_new_tokens": 12, "stop": ["\n"]}  # fmt: skip
    assert tasks["pairs"]["text"] is None and tasks["pairs"]["labels"] == ["yes", "no"]
    assert "/v1/predict" in call(server + "/openapi.json")[1]["paths"]


ROW = [{"question": "Who wrote Hamlet?"}]
BAD = [
    ("unknown field", {"task": "answer", "rows": ROW, "top_k": 3}, 400, "top_k: not supported by this server"),
    ("scores of a text task", {"task": "answer", "rows": ROW, "return_scores": True}, 400,
     "return_scores: not used by a text-to-text task (its answer is text)"),
    ("sampling a classification", {"task": "pairs", "rows": [{"a": "x", "b": "y"}], "temperature": 0.7}, 400,
     "temperature: not used by a classification task (it ranks its labels)"),
    ("missing template field", {"task": "pairs", "rows": [{"a": "x", "b": "y"}, {"a": "x"}]}, 422,
     "rows.1: missing field 'b'"),
    ("missing text-task field", {"task": "answer", "rows": [{"text": "x"}]}, 422, "rows.0: missing field 'question'"),
    ("max_new_tokens over the task's", {"task": "answer", "rows": ROW, "max_new_tokens": 13}, 422,
     "max_new_tokens: the limit is 12 (the task's)"),
    ("max_new_tokens zero", {"task": "answer", "rows": ROW, "max_new_tokens": 0}, 422, None),
    ("task and model", {"task": "answer", "model": "french", "rows": ROW}, 422, None),
    ("no task", {"rows": ROW}, 422, None),
    ("unknown task", {"task": "nope", "rows": ROW}, 404, "unknown task 'nope'"),
    ("too many rows", {"task": "answer", "rows": ROW * 65}, 422, "rows: 65 items, the limit is 64"),
    ("input too long", {"task": "answer", "rows": [{"question": "word " * 600}]}, 422,
     "rows.0: empty or longer than 512 tokens"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD, ids=[case[0] for case in BAD])
def test_bad_predict_requests_get_one_line_naming_the_field(server, case):
    _, body, expected, message = case
    status, reply, _ = call(server + "/v1/predict", "POST", body)
    assert status == expected, reply
    assert reply["error"] and "\n" not in reply["error"]
    if message is not None:
        assert reply["error"] == message


def test_classify_refuses_a_text_task(server):
    status, reply, _ = call(server + "/v1/classify", "POST", {"task": "answer", "inputs": ["x"]})
    assert (status, reply["error"]) == (422, "task: 'answer' is a text-to-text task (ask /v1/predict)")


def test_predict_through_the_server_writes_the_offline_file(server, offline, tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({**row, "id": str(i)}) + "\n" for i, row in enumerate(QUESTIONS)))
    remote, written = tmp_path / "remote.jsonl", tmp_path / "offline.jsonl"
    command = [sys.executable, "-m", "softprompt", "predict", "answer", "--server", server, "--data", str(data)]
    done = subprocess.run([*command, "--output", str(remote)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    write_predictions(written, offline["answer"], [])
    assert remote.read_text() == written.read_text()
    assert "references" in remote.read_text().splitlines()[0]  # the scored rows carry their references and scores


def test_text_tasks_that_stop_alike_decode_in_one_pass(tiny, monkeypatch):
    """The batcher's generation pass takes rows of every text task with the same stop tokens (and sampling) at
    once, each under its own prompt; other stop tokens decode in a pass of their own."""
    from softprompt.engine.causal import PromptedCausalLM
    from softprompt.serve.batcher import Batcher, Job
    from softprompt.serve.config import ServeConfig

    model, tokenizer = tiny
    tasks = [*TEXT_TASKS.values(), Task("Say: {text}", target_field="out", stop=["."], max_new_tokens=4)]
    tuned = [TunedPrompt.build(Base(model, tokenizer), init_prompt(2, model.get_input_embeddings(), tokenizer,
                                                                   "sampled-vocab", seed=i), task)
             for i, task in enumerate(tasks)]  # fmt: skip
    passes, generate = [], PromptedCausalLM.generate

    def spy(self, *args, prompts=None, stop_ids=(), **kwargs):
        passes.append(({id(p) for p in prompts or [self]}, tuple(stop_ids)))
        return generate(self, *args, prompts=prompts, stop_ids=stop_ids, **kwargs)

    monkeypatch.setattr(PromptedCausalLM, "generate", spy)
    rows = [QUESTIONS[0], SENTENCES[0], {"text": "hello"}]
    jobs = [Job("complete", t, [t.encoder.input_ids(row)], {"max_tokens": t.encoder.max_new_tokens, "temperature": 0.0,
                                                             "top_p": 1.0, "stop_ids": t.encoder.stop_ids})
            for t, row in zip(tuned, rows)]  # fmt: skip

    async def together():
        batcher = Batcher(ServeConfig(prompts="unused", max_wait_ms=500))
        try:
            return await asyncio.gather(*(batcher.enqueue(job) for job in jobs))
        finally:
            batcher.close()

    answers = asyncio.run(together())
    assert sorted(len(owners) for owners, _ in passes) == [1, 2]  # the two newline tasks in one pass
    assert {stops for _, stops in passes} == {tuple(t.encoder.stop_ids) for t in tuned}
    for t, row, answer in zip(tuned, rows, answers):
        assert t.encoder.finish(answer[0].tokens) == t.predict([row])[0]["prediction"]


@pytest.mark.parametrize(
    ("body", "task"), [({"task": "answer"}, "answer"), ({"model": "french"}, "french"), ({"rows": []}, "")]
)
def test_ray_routes_a_predict_request_by_its_task_or_model_field(body, task):
    from softprompt.serve.relay import Forwarded

    headers = ((b"content-type", b"application/json"),)
    assert Forwarded("POST", "/v1/predict", b"", headers, json.dumps(body).encode()).task() == task
