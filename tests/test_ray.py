"""`serve --engine ray`: two replicas behind Ray Serve on a local Ray (num_cpus=2), the real default model.

Answers equal the single-process server's, an upload or delete reaches every replica before its reply (the
shared store's versioned reads), and a killed replica leaves the other answering, or a clear 503, never a hang.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .serving import call, free_port, rows_for, write_prompts, zip_folder

ray = pytest.importorskip("ray", reason="Ray is in the dev extra: pip install -e '.[dev]'")
from ray import serve  # noqa: E402

from softprompt.serve import ray_engine  # noqa: E402
from softprompt.serve.client import Client  # noqa: E402
from softprompt.serve.config import ServeConfig  # noqa: E402
from softprompt.serve.relay import Forwarded  # noqa: E402
from softprompt.utils.errors import SoftpromptError  # noqa: E402

TOKEN = "test-admin-token-ray-0123456789"
SERVED = ["tweets", "sentiment", "topic", "pairs"]
APP = "softprompt-test"
TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def ray_prompts(tmp_path_factory, smollm2):
    root = write_prompts(tmp_path_factory.mktemp("ray-prompts"), smollm2)
    shutil.rmtree(root / "bare")
    return root


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ray-admin") / "token"
    path.write_text(TOKEN)
    return path


def _mixed_jobs() -> list[tuple[str, dict]]:
    return [(name, row) for name in SERVED for row in rows_for(name)]


def _ask_all(url: str, jobs: list[tuple[str, dict]]) -> list[tuple[int, dict]]:
    def ask(job):
        body = {"task": job[0], "inputs": [job[1]], "return_scores": True}
        return call(url + "/v1/classify", "POST", body)[:2]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(ask, jobs))


@pytest.fixture(scope="module")
def single_answers(smollm2_server):
    """The single-process server's answers to the mixed requests (asked before Ray starts: 2 cores). That is the
    session's server (conftest.py): it serves the same seeded prompts, written to its own folder."""
    return _ask_all(smollm2_server, _mixed_jobs())


@pytest.fixture(scope="module")
def cluster(ray_prompts, token_file, single_answers):
    """A local Ray with 2 CPUs, and the app with 2 replicas of one CPU each, each holding at most 3 tasks."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=2**27, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = ServeConfig(model="smollm2-135m", prompts=str(ray_prompts), dtype="float32",
                         admin_token_file=str(token_file), max_wait_ms=20.0, replicas=2, held_tasks=3,
                         cpus_per_replica=1.0, request_timeout=TIMEOUT_S)  # fmt: skip
    app = ray_engine.application(config)
    serve.run(app, name=APP, route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def _on_every_replica(task: str) -> list[tuple[int, dict]]:
    """(status, body) of one classify request answered by each replica (a broadcast past the router)."""
    import json

    body = json.dumps({"task": task, "inputs": [rows_for(task, 1)[0]]}).encode()
    request = Forwarded("POST", "/v1/classify", b"", ((b"content-type", b"application/json"),), body)
    replicas = serve.get_deployment_handle("Replica", APP)
    answers = replicas.broadcast("answer", request).results(timeout_s=60)
    return [(status, json.loads(payload)) for _, status, _, payload in answers]


def test_mixed_requests_answer_as_the_single_process_server(cluster, single_answers):
    jobs = _mixed_jobs()
    replies = _ask_all(cluster, jobs)
    for (status, body), (_, single) in zip(replies, single_answers):
        assert status == 200, body
        assert body["labels"] == single["labels"] and body["prompt_version"] == single["prompt_version"]
        for label, score in single["scores"][0].items():
            assert body["scores"][0][label] == pytest.approx(score, abs=1e-4)
    client = Client(cluster)  # the Python client, unchanged
    assert sorted(task["name"] for task in client.tasks()) == sorted(SERVED)
    assert client.classify(jobs[0][0], [jobs[0][1]])["labels"] == single_answers[0][1]["labels"]
    status, health, _ = call(cluster + "/healthz")
    assert status == 200 and len(health["replicas"]) == 2 and health["tasks"] == len(SERVED)
    status, metrics, _ = call(cluster + "/metrics")
    classify = [line for line in metrics.splitlines() if line.startswith('softprompt_requests_total{endpoint="/v1/c')]
    assert sum(float(line.split()[-1]) for line in classify) == len(jobs) + 1  # every replica's count, summed
    assert all('replica="' in line for line in classify)
    held = [float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("softprompt_tasks_loaded{")]
    assert len(held) == 2 and max(held) <= 3  # the per-replica bound: least recently used tasks evicted


def test_an_upload_reaches_every_replica_before_its_reply(cluster, ray_prompts, smollm2):
    from softprompt.prompts.tuned import TunedPrompt
    from softprompt.serve.store import prompt_version

    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/zip"}
    assert call(cluster + "/v1/tasks/swapped", "PUT", headers=auth, raw=zip_folder(ray_prompts / "topic"))[0] == 200
    assert {body["prompt_version"] for _, body in _on_every_replica("swapped")} == {
        prompt_version(TunedPrompt.from_pretrained(ray_prompts / "topic", base=smollm2))
    }  # both replicas now hold the first version
    upload = zip_folder(ray_prompts / "sentiment")
    status, info, _ = call(cluster + "/v1/tasks/swapped", "PUT", headers=auth, raw=upload)
    assert status == 200, info
    answers = _on_every_replica("swapped")
    assert len(answers) == 2 and {body["prompt_version"] for _, body in answers} == {info["prompt_version"]}
    follow_ups = _ask_all(cluster, [("swapped", {"text": f"follow-up {i}"}) for i in range(200)])
    assert {(status, body["prompt_version"]) for status, body in follow_ups} == {(200, info["prompt_version"])}
    assert call(cluster + "/v1/tasks/swapped", "DELETE", headers=auth)[0] == 200
    assert [status for status, _ in _on_every_replica("swapped")] == [404, 404]
    status, body, _ = call(cluster + "/v1/classify", "POST", {"task": "swapped", "inputs": ["x"]})
    assert status == 404 and body == {"error": "unknown task 'swapped'"}


def test_a_fine_tuning_job_through_ray_is_published_to_every_replica(cluster, data_dir):
    """A job created through the gateway is trained by one replica (the claim lock keeps the other off it) and
    its task, written to the shared prompts folder, is answered by both with the same prompt version."""
    import json

    from .test_tuning_service import RECIPE, _jsonl, _tweets

    auth = {"Authorization": f"Bearer {TOKEN}"}
    form = (b"--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n--b\r\n"
            b"Content-Disposition: form-data; name=\"file\"; filename=\"t.jsonl\"\r\n\r\n"
            + _jsonl(_tweets(data_dir, 8)) + b"\r\n--b--\r\n")  # fmt: skip
    status, upload, _ = call(cluster + "/v1/files", "POST", raw=form,
                             headers={**auth, "Content-Type": "multipart/form-data; boundary=b"})  # fmt: skip
    assert status == 200, upload
    body = {"model": "smollm2-135m", "training_file": upload["id"], "softprompt": RECIPE,
            "hyperparameters": {"n_epochs": 1, "batch_size": 8}}  # fmt: skip
    status, job, _ = call(cluster + "/v1/fine_tuning/jobs", "POST", body, auth)
    assert status == 200, job
    deadline = time.monotonic() + 240
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
        job = call(f"{cluster}/v1/fine_tuning/jobs/{job['id']}")[1]
    assert job["status"] == "succeeded", job["error"]
    name = job["fine_tuned_model"]
    answers = _on_every_replica(name)
    assert [status for status, _ in answers] == [200, 200] and len({b["prompt_version"] for _, b in answers}) == 1
    events = call(f"{cluster}/v1/fine_tuning/jobs/{job['id']}/events?limit=100")[1]["data"]
    assert sum(e["message"] == "Fine-tuning job started" for e in events) == 1  # trained once, by one replica
    assert json.dumps(events).count("/1: training loss=") == 1


def test_a_killed_replica_leaves_answers_or_a_clear_503(cluster):
    """Runs last: it kills a replica (Ray starts a new one). Every request ends within the request timeout."""
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "#Replica#" in a["name"]]
    assert len(names) == 2

    def timed(job):
        start = time.monotonic()
        status, body = _ask_all(cluster, [job])[0]
        return status, body, time.monotonic() - start

    jobs = _mixed_jobs() * 2
    with ThreadPoolExecutor(8) as pool:
        pending = pool.map(timed, jobs)
        time.sleep(0.5)
        ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
        replies = list(pending) + [timed(job) for job in jobs[:8]]
    for status, body, seconds in replies:
        assert status == 200 or (status == 503 and body["error"].startswith("replica unavailable")), body
        assert seconds < TIMEOUT_S + 5
    assert sum(status == 200 for status, _, _ in replies[-8:]) >= 1


def test_engine_ray_without_ray_says_what_to_install(monkeypatch):
    monkeypatch.setattr(ray_engine, "serve", None)
    with pytest.raises(SoftpromptError, match=r"pip install 'softprompt\[ray\]'"):
        ray_engine.serve_ray(ServeConfig(prompts=".", engine="ray"))


def _readme_app_builder_args() -> dict[str, str]:
    """The key=value arguments of README's `serve run ...:app_builder` line, as `serve run` hands them over."""
    lines = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8").splitlines()
    line = next(line for line in lines if line.startswith("serve run softprompt.serve.ray_engine:app_builder "))
    return dict(arg.split("=", 1) for arg in line.split()[3:])


def test_the_readmes_app_builder_line_builds_the_application_it_describes(tmp_path):
    """Every option of README's line, a limit among them, reaches the replicas' config (no Ray cluster)."""
    args = _readme_app_builder_args()
    assert {"prompts", "replicas", "max_items", "request_timeout"} <= set(args)
    args["prompts"] = str(tmp_path)  # README's /shared/prompts is a cluster's shared folder
    app = ray_engine.app_builder(dict(args))
    assert isinstance(app, serve.Application)
    replicas, gateway_config, by_task = app._bound_deployment.init_args
    config, threads = replicas._bound_deployment.init_args
    assert config == gateway_config and by_task and threads == 1
    for key, value in args.items():
        assert getattr(config, key) == type(getattr(config, key))(value), key
    assert replicas._bound_deployment.num_replicas == int(args["replicas"])
    assert ServeConfig(prompts=".").max_items != config.max_items  # the line's limit, not the default


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"prompts": "p", "max_itmes": "8"}, "app_builder: unknown key 'max_itmes'"),
        ({"prompts": "p", "timeout_s": "5"}, "app_builder: unknown key 'timeout_s'"),  # it is request_timeout
        ({"prompts": "p", "max_items": "many"}, "app_builder: max_items=many: give an integer"),
        ({"prompts": "p", "batching": "yes"}, "app_builder: batching=yes: give true or false"),
        ({"prompts": "p", "max_items": "0"}, "max_items: must be at least 1"),
        ({"prompts": "p", "port": "9000"}, "app_builder: port: not set here"),
        ({"replicas": "2"}, "app_builder: give prompts=..."),
    ],
)
def test_app_builder_refuses_a_bad_key_with_one_line(args, message):
    with pytest.raises(SoftpromptError) as error:
        ray_engine.app_builder(args)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
