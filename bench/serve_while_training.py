"""Serving while a fine-tuning job trains on the same server: serve.py's load on 4 tasks, first idle, then while a
job trains a new prompt on the served base; and the job's speed against `softprompt train` alone.

    python bench/serve_while_training.py [--model smollm2-135m] [--concurrency 8] [--requests 256] [--rows 64]
                                         [--epochs 2] [--train-every 4] [--dtype auto]

Prints one JSON line each: the machine and dtype; the served tasks' throughput and p50/p99 latency idle and
while the job trains (only requests sent and answered inside the job's run); the job's steps/s under that load,
alone on the idle server, and `softprompt train`'s (the same recipe, rows and seed, in its own process); the
server's RSS idle and its peak during the job (one copy of the base: the job adds its activations only); and
the ratios (p99 during / idle, steps/s against `softprompt train`).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve import DATA, rss_mb, workload, write_prompts  # noqa: E402

from softprompt.models.base import load_base  # noqa: E402
from softprompt.utils.hardware import describe, resolve_dtype  # noqa: E402
from tests.serving import ADMIN_TOKEN, call, running_server  # noqa: E402

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RECIPE = {"template": "Tweet text : {text} Label : ", "label_field": "label", "num_virtual_tokens": 8}


def load(url: str, jobs: list[tuple[str, dict]], concurrency: int, until=None) -> list[tuple[float, float, float]]:
    """(sent, answered, seconds) of each request; with `until`, the jobs again and again until it is true."""
    timings, lock = [], threading.Lock()

    def one(job) -> None:
        start = time.perf_counter()
        status, body, _ = call(url + "/v1/classify", "POST", {"task": job[0], "inputs": [job[1]]})
        assert status == 200, body
        end = time.perf_counter()
        with lock:
            timings.append((start, end, end - start))

    with ThreadPoolExecutor(concurrency) as pool:
        while True:
            list(pool.map(one, jobs))
            if until is None or until():
                return timings


def summary(timings: list[tuple[float, float, float]], label: str) -> dict:
    seconds = sorted(t[2] for t in timings)
    span = max(t[1] for t in timings) - min(t[0] for t in timings)
    p99 = seconds[int(0.99 * (len(seconds) - 1))]
    return {"phase": label, "requests": len(seconds), "throughput_rps": len(seconds) / span,
            "p50_ms": 1000 * statistics.median(seconds), "p99_ms": 1000 * p99}  # fmt: skip


def upload(url: str, rows: list[dict]) -> str:
    boundary = "softpromptbench"
    body = "".join(json.dumps(row) + "\n" for row in rows)
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"tweets.jsonl\"\r\n"
            f"Content-Type: application/jsonl\r\n\r\n{body}\r\n--{boundary}--\r\n").encode()  # fmt: skip
    status, answer, _ = call(url + "/v1/files", "POST", raw=form,
                             headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
    assert status == 200, answer
    return answer["id"]


class Job:
    """A job created on the server, watched: when it ran, and the server's peak RSS meanwhile."""

    def __init__(self, url: str, model: str, file_id: str, epochs: int) -> None:
        body = {"model": model, "training_file": file_id, "seed": 42, "softprompt": RECIPE,
                "hyperparameters": {"n_epochs": epochs, "batch_size": 8}}  # fmt: skip
        status, self.job, _ = call(url + "/v1/fine_tuning/jobs", "POST", body, AUTH)
        assert status == 200, self.job
        self.url, self.started, self.ended, self.peak_rss = url, None, None, 0.0
        self.watcher = threading.Thread(target=self.wait)
        self.watcher.start()

    def done(self) -> bool:
        job = call(f"{self.url}/v1/fine_tuning/jobs/{self.job['id']}")[1]
        self.peak_rss = max(self.peak_rss, rss_mb(self.url))
        now = time.perf_counter()
        if job["status"] == "running" and self.started is None:
            self.started = now
        if job["status"] in ("succeeded", "failed", "cancelled"):
            assert job["status"] == "succeeded", job["error"]
            self.ended = self.ended or now
            self.job = job
            return True
        return False

    def wait(self) -> None:
        while not self.done():
            time.sleep(0.05)

    def finished(self) -> bool:
        return self.ended is not None

    def steps_per_s(self) -> float:
        return self.job["softprompt"]["steps"]["total"] / (self.ended - self.started)


def train_alone(job: dict, folder: Path) -> float:
    """`softprompt train` on the job's recipe in its own process: steps/s over its training time."""
    config = {**job["softprompt"]["recipe"], "output": str(folder)}
    recipe = folder.parent / "recipe.json"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(json.dumps(config))
    code = ("import json,sys; from softprompt.training.train import TrainConfig, fit; "
            "fit(TrainConfig.from_dict(json.load(open(sys.argv[1])), 'recipe'))")  # fmt: skip
    subprocess.run([sys.executable, "-c", code, str(recipe)], check=True, capture_output=True)
    record = json.loads((folder / "softprompt.json").read_text())
    return job["softprompt"]["steps"]["total"] / record["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--rows", type=int, default=64, help="the job's training rows (RAFT tweets)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-every", type=int, default=8)
    parser.add_argument("--dtype", default="auto", help="the server's base dtype: auto, float32 or bfloat16")
    args = parser.parse_args()
    args.dtype = resolve_dtype(args.dtype, serving=True)
    print(json.dumps({"machine": describe(), "dtype": args.dtype, "train_every": args.train_every}), flush=True)
    with open(DATA / "raft_twitter_complaints" / "train.csv", newline="", encoding="utf-8") as handle:
        rows = [{"text": r["Tweet text"], "label": r["Label"]} for r in csv.DictReader(handle)][: args.rows]
    jobs = workload(args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts"
        write_prompts(prompts, load_base(args.model, args.dtype))
        (Path(tmp) / "token").write_text(ADMIN_TOKEN)
        extra = ("--admin-token-file", str(Path(tmp) / "token"), "--max-queue", "4096", "--dtype", args.dtype,
                 "--train-every", str(args.train_every))  # fmt: skip
        with running_server(args.model, prompts, *extra) as url:
            load(url, jobs[:16], 4)  # warm-up: every task's prompt cache
            idle_rss = rss_mb(url)
            idle = summary(load(url, jobs, args.concurrency), "idle")
            print(json.dumps(idle), flush=True)
            file_id = upload(url, rows)
            quiet = Job(url, args.model, file_id, args.epochs)
            quiet.watcher.join()
            busy = Job(url, args.model, file_id, args.epochs)
            timings = load(url, jobs, args.concurrency, until=busy.finished)
            busy.watcher.join()
            inside = [t for t in timings if busy.started and t[0] >= busy.started and t[1] <= busy.ended]
            during = summary(inside, "while a job trains")
            print(json.dumps(during), flush=True)
        alone = train_alone(busy.job, Path(tmp) / "alone" / "run")
        steps = {"job_steps": busy.job["softprompt"]["steps"]["total"],
                 "job_under_load_steps_per_s": busy.steps_per_s(),
                 "job_on_idle_server_steps_per_s": quiet.steps_per_s(), "softprompt_train_steps_per_s": alone}
        print(json.dumps(steps), flush=True)
        print(json.dumps({"rss_mb_idle": idle_rss, "rss_mb_peak_during_job": max(quiet.peak_rss, busy.peak_rss)}))
        print(json.dumps({"ratio": "during/idle", "p99": during["p99_ms"] / idle["p99_ms"],
                          "throughput": during["throughput_rps"] / idle["throughput_rps"],
                          "job_under_load/softprompt_train": busy.steps_per_s() / alone,
                          "job_idle_server/softprompt_train": quiet.steps_per_s() / alone}))  # fmt: skip


if __name__ == "__main__":
    main()
