"""The HTTP server on loopback with the real default model: answers equal offline predictions, bad requests
get one-line 4xx errors, admin uploads are guarded."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from softprompt.tuned import TunedPrompt

from .serving import TASKS, TEXTS, call, rows_for, running_server, write_prompts

TOKEN = "test-admin-token-0123456789"


@pytest.fixture(scope="module")
def prompts(tmp_path_factory, smollm2):
    return write_prompts(tmp_path_factory.mktemp("prompts"), smollm2)


@pytest.fixture(scope="module")
def server(prompts, tmp_path_factory):
    token_file = tmp_path_factory.mktemp("admin") / "token"
    token_file.write_text(TOKEN)
    with running_server("smollm2-135m", prompts, "--admin-token-file", str(token_file), "--max-wait-ms", "20") as url:
        yield url


def _offline(prompts, smollm2, name):
    return TunedPrompt.from_pretrained(prompts / name, base=smollm2).predict(rows_for(name))


def test_mixed_task_answers_equal_offline_predict(server, prompts, smollm2):
    """Requests of five tasks sent at once (so they share forwards) answer as `predict` does offline."""
    jobs = [(name, row) for name in TASKS for row in rows_for(name)]

    def ask(job):
        return call(server + "/v1/classify", "POST", {"task": job[0], "inputs": [job[1]], "return_scores": True})

    with ThreadPoolExecutor(len(jobs)) as pool:
        replies = list(pool.map(ask, jobs))
    expected = {name: _offline(prompts, smollm2, name) for name in TASKS}
    seen = {name: 0 for name in TASKS}
    for (name, _), (status, body, _) in zip(jobs, replies):
        assert status == 200, body
        want = expected[name][seen[name]]
        seen[name] += 1
        assert body["labels"] == [want["label"]]
        for label, score in want["scores"].items():
            assert body["scores"][0][label] == pytest.approx(score, abs=1e-3)
    status, metrics, _ = call(server + "/metrics")
    batches = [line for line in metrics.splitlines() if line.startswith("softprompt_batch_rows_count")]
    total = [line for line in metrics.splitlines() if line.startswith("softprompt_batch_rows_sum")]
    assert float(batches[0].split()[-1]) < float(total[0].split()[-1])  # some forwards held several rows


def test_predict_through_the_server_cli(server, prompts, smollm2, tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows_for("topic")))
    out = tmp_path / "preds.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "softprompt",
            "predict",
            "topic",
            "--server",
            server,
            "--data",
            str(data),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    remote = [json.loads(line) for line in out.read_text().splitlines()]
    offline = _offline(prompts, smollm2, "topic")
    assert [r["label"] for r in remote] == [o["label"] for o in offline]


def test_greedy_completion_equals_offline_generation(server, prompts, smollm2):
    status, body, _ = call(
        server + "/v1/completions", "POST", {"model": "tweets", "prompt": TEXTS[0], "max_tokens": 8, "temperature": 0}
    )
    assert status == 200, body
    tuned = TunedPrompt.from_pretrained(prompts / "tweets", base=smollm2)
    ids = torch.tensor([tuned.tokenizer(TEXTS[0])["input_ids"]])
    tokens = tuned.lm.generate(ids, torch.ones_like(ids), 8, tuned.tokenizer.eos_token_id)[0]
    assert body["choices"][0]["text"] == tuned.tokenizer.decode(tokens, skip_special_tokens=True)
    assert body["object"] == "text_completion" and body["usage"]["completion_tokens"] == len(tokens)
    status, stopped, _ = call(
        server + "/v1/completions",
        "POST",
        {
            "model": "tweets",
            "prompt": TEXTS[0],
            "max_tokens": 8,
            "temperature": 0,
            "stop": body["choices"][0]["text"][2:4],
        },
    )
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert len(stopped["choices"][0]["text"]) < len(body["choices"][0]["text"])


def test_tasks_health_and_openapi(server):
    status, tasks, _ = call(server + "/v1/tasks")
    assert status == 200
    assert {t["name"]: t["num_virtual_tokens"] for t in tasks} == {n: k for n, (_, k) in TASKS.items()}
    assert call(server + "/healthz")[1]["status"] == "ok"
    schema = call(server + "/openapi.json")[1]
    assert {"/v1/classify", "/v1/completions", "/v1/tasks", "/v1/tasks/{name}"} <= set(schema["paths"])


BAD = [
    ("unknown task", "POST", "/v1/classify", {"task": "nope", "inputs": ["x"]}, None, 404),
    ("empty inputs", "POST", "/v1/classify", {"task": "tweets", "inputs": []}, None, 422),
    ("wrong types", "POST", "/v1/classify", {"task": "tweets", "inputs": [3]}, None, 422),
    ("missing field", "POST", "/v1/classify", {"task": "pairs", "inputs": [{"a": "x"}]}, None, 422),
    ("string for a two-field task", "POST", "/v1/classify", {"task": "pairs", "inputs": ["x"]}, None, 422),
    ("too many items", "POST", "/v1/classify", {"task": "tweets", "inputs": ["x"] * 65}, None, 422),
    ("too long", "POST", "/v1/classify", {"task": "tweets", "inputs": ["word " * 600]}, None, 422),
    ("empty input", "POST", "/v1/classify", {"task": "bare", "inputs": [""]}, None, 422),
    ("bad json", "POST", "/v1/classify", b'{"task": "tweets", "inputs": [', None, 422),
    ("body too large", "POST", "/v1/classify", {"task": "tweets", "inputs": ["x" * 2_000_000]}, None, 413),
    (
        "max_tokens over limit",
        "POST",
        "/v1/completions",
        {"model": "tweets", "prompt": "x", "max_tokens": 10**6},
        None,
        422,
    ),
    ("n > 1", "POST", "/v1/completions", {"model": "tweets", "prompt": "x", "n": 2}, None, 422),
    ("seed out of range", "POST", "/v1/completions", {"model": "tweets", "prompt": "x", "seed": 2**64}, None, 422),
    ("lone surrogate input", "POST", "/v1/classify", b'{"task": "tweets", "inputs": ["\\ud800"]}', None, 422),
    (
        "lone surrogate prompt",
        "POST",
        "/v1/completions",
        b'{"model": "tweets", "prompt": ["ok", "\\udfff"]}',
        None,
        422,
    ),
    ("traversal path", "PUT", "/v1/tasks/..%2F..%2Fetc", b"zip", {"Authorization": f"Bearer {TOKEN}"}, 404),
    ("traversal name", "PUT", "/v1/tasks/..", b"zip", {"Authorization": f"Bearer {TOKEN}"}, 422),
    ("hidden name", "PUT", "/v1/tasks/.hidden", b"zip", {"Authorization": f"Bearer {TOKEN}"}, 422),
    ("admin without token", "DELETE", "/v1/tasks/tweets", None, None, 401),
    ("admin wrong token", "DELETE", "/v1/tasks/tweets", None, {"Authorization": "Bearer wrong"}, 401),
    ("upload not a zip", "PUT", "/v1/tasks/new", b"not a zip", {"Authorization": f"Bearer {TOKEN}"}, 422),
]


@pytest.mark.parametrize("case", BAD, ids=[case[0] for case in BAD])
def test_bad_requests_get_one_line_4xx(server, case):
    _, method, path, body, headers, expected = case
    raw = body if isinstance(body, bytes) else None
    status, reply, _ = call(server + path, method, None if raw else body, headers, raw=raw)
    assert status == expected, reply
    assert isinstance(reply, dict) and "\n" not in reply["error"] and reply["error"]
    assert call(server + "/healthz")[0] == 200


@pytest.mark.parametrize("params", [{"top_p": 5e-324}, {"temperature": 1e-300}, {"temperature": 2.0, "top_p": 0.5}])
def test_extreme_sampling_settings_still_answer(server, params):
    body = {"model": "tweets", "prompt": "hello", "max_tokens": 3, "seed": 7, **params}
    status, reply, _ = call(server + "/v1/completions", "POST", body)
    assert status == 200, reply
    assert call(server + "/v1/completions", "POST", body)[1]["choices"] == reply["choices"]  # same seed, same text


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_admin_upload_replace_and_delete(server, prompts):
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/zip"}
    folder = {p.name: p.read_bytes() for p in (prompts / "sentiment").iterdir() if p.is_file()}
    status, info, _ = call(server + "/v1/tasks/sentiment-copy", "PUT", headers=auth, raw=_zip(folder))
    assert status == 200, info
    assert info["labels"] == ["0", "1"] and info["num_virtual_tokens"] == 4
    status, body, _ = call(server + "/v1/classify", "POST", {"task": "sentiment-copy", "inputs": [TEXTS[5]]})
    assert status == 200 and body["labels"][0] in ("0", "1")
    slip = _zip({"../../evil/adapter_model.safetensors": folder["adapter_model.safetensors"]})
    status, reply, _ = call(server + "/v1/tasks/slip", "PUT", headers=auth, raw=slip)
    assert status == 422 and "refused path" in reply["error"]
    assert not (prompts.parent / "evil").exists() and not (prompts / "slip").exists()
    status, _, _ = call(server + "/v1/tasks/sentiment-copy", "DELETE", headers=auth)
    assert status == 200
    assert call(server + "/v1/classify", "POST", {"task": "sentiment-copy", "inputs": ["x"]})[0] == 404
    assert not (prompts / "sentiment-copy").exists()
