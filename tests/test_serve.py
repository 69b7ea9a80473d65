"""The HTTP server on loopback with the real default model: answers equal offline predictions, bad requests
get one-line 4xx errors, admin uploads are guarded. The real model's server is the session's (conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from softprompt.prompts.tuned import TunedPrompt

from .serving import ADMIN_TOKEN, TASKS, TEXTS, call, rows_for, running_server, write_prompts, zip_folder, zipped

TOKEN = ADMIN_TOKEN


@pytest.fixture(scope="module")
def server(smollm2_server):
    return smollm2_server


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
    ("n > 1", "POST", "/v1/completions", {"model": "tweets", "prompt": "x", "n": 2}, None, 400),
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
    ("unknown classify field", "POST", "/v1/classify", {"task": "tweets", "inputs": ["x"], "top_k": 3}, None, 400),
]


@pytest.mark.parametrize("case", BAD, ids=[case[0] for case in BAD])
def test_bad_requests_get_one_line_4xx(server, case):
    _, method, path, body, headers, expected = case
    raw = body if isinstance(body, bytes) else None
    status, reply, _ = call(server + path, method, None if raw else body, headers, raw=raw)
    assert status == expected, reply
    assert isinstance(reply, dict) and "\n" not in reply["error"] and reply["error"]
    assert call(server + "/healthz")[0] == 200


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"task": "tweets", "inputs": ["x"], "n": 1}, (400, "n: not supported by this server")),
        ({"task": "pairs", "inputs": [{"a": "x", "b": "y"}, {"a": "x"}]}, (422, "inputs.1: missing field 'b'")),
        ({"task": "pairs", "inputs": ["x"]}, (422, "inputs.0: a text fills one field; the template has 'a', 'b'")),
        ({"task": "tweets", "inputs": ["ok", "word " * 600]}, (422, "inputs.1: empty or longer than 512 tokens")),
    ],
)
def test_classify_names_the_field_it_refuses(server, body, expected):
    """An unknown field is refused (400, as on completions), never ignored; the Encoder's own checks of a row
    come back naming the input they refuse."""
    status, reply, _ = call(server + "/v1/classify", "POST", body)
    assert (status, reply["error"]) == expected


@pytest.mark.parametrize("params", [{"top_p": 5e-324}, {"temperature": 1e-300}, {"temperature": 2.0, "top_p": 0.5}])
def test_extreme_sampling_settings_still_answer(server, params):
    body = {"model": "tweets", "prompt": "hello", "max_tokens": 3, "seed": 7, **params}
    status, reply, _ = call(server + "/v1/completions", "POST", body)
    assert status == 200, reply
    assert call(server + "/v1/completions", "POST", body)[1]["choices"] == reply["choices"]  # same seed, same text


def test_admin_upload_replace_and_delete(server, prompts):
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/zip"}
    folder = {p.name: p.read_bytes() for p in (prompts / "sentiment").iterdir() if p.is_file()}
    status, info, _ = call(server + "/v1/tasks/sentiment-copy", "PUT", headers=auth, raw=zipped(folder))
    assert status == 200, info
    assert info["labels"] == ["0", "1"] and info["num_virtual_tokens"] == 4
    status, body, _ = call(server + "/v1/classify", "POST", {"task": "sentiment-copy", "inputs": [TEXTS[5]]})
    assert status == 200 and body["labels"][0] in ("0", "1")
    slip = zipped({"../../evil/adapter_model.safetensors": folder["adapter_model.safetensors"]})
    status, reply, _ = call(server + "/v1/tasks/slip", "PUT", headers=auth, raw=slip)
    assert status == 422 and "refused path" in reply["error"]
    assert not (prompts.parent / "evil").exists() and not (prompts / "slip").exists()
    status, _, _ = call(server + "/v1/tasks/sentiment-copy", "DELETE", headers=auth)
    assert status == 200
    assert call(server + "/v1/classify", "POST", {"task": "sentiment-copy", "inputs": ["x"]})[0] == 404
    assert not (prompts / "sentiment-copy").exists()


def test_every_answer_names_the_prompt_version_that_gave_it(server, prompts, smollm2):
    """classify, completions and the task list carry the content hash of the task's prompt (store.py)."""
    from softprompt.serve.store import prompt_version

    expected = prompt_version(TunedPrompt.from_pretrained(prompts / "tweets", base=smollm2))
    tasks = {t["name"]: t["prompt_version"] for t in call(server + "/v1/tasks")[1]}
    assert tasks["tweets"] == expected and len(set(tasks.values())) == len(TASKS)
    status, body, _ = call(server + "/v1/classify", "POST", {"task": "tweets", "inputs": [TEXTS[0]]})
    assert status == 200 and body["prompt_version"] == expected
    status, body, _ = call(server + "/v1/completions", "POST", {"model": "tweets", "prompt": "hi", "max_tokens": 1})
    assert status == 200 and body["system_fingerprint"] == expected


def test_a_replaced_task_answers_with_its_new_prompt_at_once(server, prompts, smollm2, tmp_path):
    """A request sent after a PUT's reply runs on the uploaded prompt, never the one it replaced."""
    from softprompt.serve.store import prompt_version

    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/zip"}
    versions = []
    for source in ("topic", "sentiment", "topic"):  # replace, replace back
        status, info, _ = call(server + "/v1/tasks/swapped", "PUT", headers=auth, raw=zip_folder(prompts / source))
        assert status == 200, info
        assert info["prompt_version"] == prompt_version(TunedPrompt.from_pretrained(prompts / source, base=smollm2))
        status, body, _ = call(server + "/v1/classify", "POST", {"task": "swapped", "inputs": [{"text": TEXTS[3]}]})
        assert status == 200 and body["prompt_version"] == info["prompt_version"], body
        assert body["labels"][0] in TASKS[source][0].labels
        versions.append(info["prompt_version"])
    assert versions[0] == versions[2] != versions[1]  # a content hash: the same files, the same version
    assert call(server + "/v1/tasks/swapped", "DELETE", headers=auth)[0] == 200


def test_bearer_matches_only_the_exact_secret(monkeypatch):
    """Right and wrong keys of any length go through one constant-time comparison of equal-length digests."""
    import hmac

    from softprompt.serve import auth

    compared, real = [], hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    secret = "s3cret-key-0123456789"
    right = [f"Bearer {secret}", f"bearer {secret}".encode()]
    wrong = [None, "", secret, f"Basic {secret}", f"Bearer {secret}x", f"Bearer {secret[:-1]}", "Bearer ", "Bearer x"]
    assert all(auth.bearer_matches(header, secret) for header in right)
    assert not any(auth.bearer_matches(header, secret) for header in wrong)
    assert compared == [(32, 32)] * (len(right) + len(wrong))


API_KEY = "test-api-key-abcdefghijklmnop"
KEYED = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def tiny_prompts(tmp_path_factory, tiny):
    return write_prompts(tmp_path_factory.mktemp("tiny-prompts"), tiny)


@pytest.fixture(scope="module")
def secrets(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("secrets")
    (folder / "key").write_text(API_KEY + "\n")
    (folder / "token").write_text(TOKEN)
    return str(folder / "key"), str(folder / "token")


def _refused(reply) -> None:
    status, body, headers = reply
    assert status == 401, body
    assert isinstance(body, dict) and body["error"] and "\n" not in body["error"]
    assert headers["WWW-Authenticate"] == "Bearer"


def test_api_key_guards_every_route_but_admin_ones(tiny_dir, tiny_prompts, secrets, tmp_path):
    """With --api-key-file: no key, a wrong key or another scheme -> 401 on every route, even unknown paths,
    /docs and the schema; the key -> 200. Admin routes take the admin token, not the key."""
    from softprompt.serve.client import Client
    from softprompt.utils.errors import SoftpromptError

    key_file, token_file = secrets
    extra = ("--api-key-file", key_file, "--admin-token-file", token_file)
    with running_server(str(tiny_dir), tiny_prompts, *extra, headers=KEYED) as url:
        routes = [
            ("GET", "/v1/tasks", None),
            ("GET", "/healthz", None),
            ("GET", "/metrics", None),
            ("GET", "/openapi.json", None),
            ("GET", "/docs", None),
            ("POST", "/v1/classify", {"task": "tweets", "inputs": [TEXTS[0]]}),
            ("POST", "/v1/completions", {"model": "tweets", "prompt": "hi", "max_tokens": 1}),
        ]
        wrong = [{}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": f"Basic {API_KEY}"}]
        wrong.append({"Authorization": f"Bearer {TOKEN}"})  # the admin token is not an API key
        for method, path, body in [*routes, ("GET", "/no-such-path", None), ("POST", "/v1/classify", None)]:
            for headers in wrong:
                _refused(call(url + path, method, body, headers))
        for method, path, body in routes:
            status, reply, _ = call(url + path, method, body, KEYED)
            assert status == 200, (path, reply)
        admin = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/zip"}
        folder = zip_folder(tiny_prompts / "bare")
        _refused(call(url + "/v1/tasks/added", "PUT", headers={**KEYED, "Content-Type": "application/zip"}, raw=folder))
        assert call(url + "/v1/tasks/added", "PUT", headers=admin, raw=folder)[0] == 200
        assert call(url + "/v1/classify", "POST", {"task": "added", "inputs": ["x"]}, KEYED)[0] == 200
        _refused(call(url + "/v1/tasks/added", "DELETE", headers=KEYED))
        assert call(url + "/v1/tasks/added", "DELETE", headers=admin)[0] == 200
        assert [t["name"] for t in Client(url, api_key=API_KEY).tasks()] == sorted(TASKS)
        with pytest.raises(SoftpromptError, match="401"):
            Client(url).tasks()
        data, out = tmp_path / "rows.jsonl", tmp_path / "preds.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows_for("topic")))
        command = [sys.executable, "-m", "softprompt", "predict", "topic", "--server", url, "--data", str(data)]
        done = subprocess.run(
            [*command, "--output", str(out), "--api-key-file", key_file], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert len(out.read_text().splitlines()) == len(rows_for("topic"))


def test_open_health_metrics_leaves_only_those_two_open(tiny_dir, tiny_prompts, secrets):
    with running_server(str(tiny_dir), tiny_prompts, "--api-key-file", secrets[0], "--open-health-metrics") as url:
        assert call(url + "/healthz")[0] == 200
        assert call(url + "/metrics")[0] == 200
        for path in ("/v1/tasks", "/openapi.json", "/docs"):
            _refused(call(url + path))
        _refused(call(url + "/v1/classify", "POST", {"task": "tweets", "inputs": [TEXTS[0]]}))
        assert call(url + "/v1/tasks", headers=KEYED)[0] == 200
        # no admin token: the admin routes fall under the key, then say they are off
        _refused(call(url + "/v1/tasks/tweets", "DELETE"))
        assert call(url + "/v1/tasks/tweets", "DELETE", headers=KEYED)[0] == 403


def test_bad_secret_files_are_refused_with_one_line(tmp_path, secrets):
    from softprompt.serve.config import ServeConfig
    from softprompt.serve.server import build
    from softprompt.utils.errors import SoftpromptError

    short = tmp_path / "short"
    short.write_text("too-short\n")
    done = subprocess.run(
        [sys.executable, "-m", "softprompt", "serve", "--prompts", str(tmp_path), "--api-key-file", str(short)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "--api-key-file" in done.stderr and str(short) in done.stderr and "16 characters" in done.stderr
    spaced = tmp_path / "spaced"
    spaced.write_text("a key with spaces in it", encoding="utf-8")
    cases = [
        ({"api_key_file": str(tmp_path / "missing")}, "--api-key-file .*missing"),
        ({"api_key_file": str(spaced)}, "visible ASCII"),
        ({"admin_token_file": str(short)}, "--admin-token-file .*16 characters"),
        ({"api_key_file": secrets[1], "admin_token_file": secrets[1]}, "holds the admin token"),
    ]
    for kwargs, message in cases:  # refused before the model loads
        with pytest.raises(SoftpromptError, match=message):
            build(ServeConfig(model="no-such-model", prompts=str(tmp_path), **kwargs))
