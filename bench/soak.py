"""Soak test of `softprompt serve`: a long mixed load with prompt churn, checked for staleness, 5xx and leaks.

    python bench/soak.py [--requests 20000] [--clients 32] [--tasks 40] [--churn 10] [--warmup 1000]

Starts a real server on 127.0.0.1 (a subprocess on a free port, the real default model, an API key and an
admin token) over `--tasks` prompt folders written with the library's own save path (RAFT twitter_complaints'
template and labels, seeded prompts of 4 to 20 virtual tokens). `--clients` threads then send single-input
requests, 70% /v1/classify and 30% /v1/completions (1 to 4 new tokens), to random tasks, while an admin
thread keeps replacing (PUT, a new prompt) or deleting and re-adding (DELETE, then PUT) the first `--churn`
tasks, one operation every `--churn-interval` seconds. `--warmup` requests run first, under the same churn.

Every answer names the prompt version that gave it (classify's `prompt_version`, completions'
`system_fingerprint`). An answer is stale when its version is older than the task's last PUT or DELETE whose
200 had arrived before the request was sent. A 404 is expected when the task was being deleted while the
request was in flight, and counted apart; any other non-200 is an error. Prints the server's RSS after the
warm-up and at the end (each read with the server idle) and its peak under load, the status codes and the
stale answers; passes (exit 0) only with zero stale answers, zero 5xx, zero other errors, every task at its
last acknowledged version at the end, and RSS growth under `--max-rss-growth` percent. Bounded: `--requests`
requests at most, `--max-minutes` at most; the server is stopped at the end, on failure, Ctrl-C and SIGTERM.
Takes an hour to 90 minutes on 2 cores (bfloat16: ~5 requests/s alone, 3.7/s shared with other work).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SOFTPROMPT_DATA", str(ROOT.parent / "shared" / "data"))

from softprompt.data.tasks import load_named  # noqa: E402
from softprompt.models.base import Base, load_base  # noqa: E402
from softprompt.models.prompt import init_prompt  # noqa: E402
from softprompt.prompts.record import FolderRecord  # noqa: E402
from softprompt.prompts.tuned import TunedPrompt  # noqa: E402
from softprompt.serve.batcher import IDLE_RELEASE_S  # noqa: E402
from softprompt.serve.store import prompt_version  # noqa: E402
from tests.serving import call, running_server, zip_folder  # noqa: E402

KEY = "soak-api-key-" + "k" * 16
TOKEN = "soak-admin-token-" + "t" * 16
COMPLETE_SHARE = 0.3


@dataclass
class Event:
    """One admin operation on a task: `seq` orders a task's operations; `ack` is when its 200 arrived."""

    seq: int
    kind: str  # "put" or "delete"
    version: str | None
    start: float
    ack: float | None = None


@dataclass
class Reply:
    task: str
    kind: str
    status: int | str  # an HTTP status, or "connection" when no answer came
    version: str | None
    sent: float
    received: float


@dataclass
class Ledger:
    """What the admin thread did to each task, in order, and which version each PUT installs."""

    events: dict[str, list[Event]] = field(default_factory=dict)
    seq_of: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self, task: str, kind: str, version: str | None, start: float) -> Event:
        """Record an operation before it is sent, so a reply that beats its acknowledgement is understood."""
        with self.lock:
            events = self.events.setdefault(task, [])
            event = Event(len(events), kind, version, start)
            if version is not None:
                if version in self.seq_of.setdefault(task, {}):
                    raise RuntimeError(f"{task}: version {version} installed twice; the soak needs distinct prompts")
                self.seq_of[task][version] = event.seq
            events.append(event)
            return event

    def stale(self, reply: Reply) -> str | None:
        """Why this 200 is stale (older than the last operation acknowledged before it was sent), or None."""
        seq = self.seq_of[reply.task].get(reply.version)
        if seq is None:
            return f"{reply.task}: unknown version {reply.version}"
        acked = [e for e in self.events[reply.task] if e.ack is not None and e.ack < reply.sent]
        if acked and seq < acked[-1].seq:
            last, after = acked[-1], reply.sent - acked[-1].ack
            return f"{reply.task}: answered by {reply.version} {after:.3f} s after the 200 of {last.kind} #{last.seq}"
        return None

    def expected_404(self, reply: Reply) -> bool:
        """Whether the task may have been absent while this request was in flight (a DELETE begun before the
        answer, whose re-adding PUT was not acknowledged before the request was sent)."""
        events = self.events.get(reply.task, [])
        for index, event in enumerate(events):
            if event.kind == "delete" and event.start < reply.received:
                later = next((e for e in events[index + 1 :] if e.kind == "put"), None)
                if later is None or later.ack is None or later.ack > reply.sent:
                    return True
        return False


class Prompts:
    """Writes seeded prompt folders for the task with the library's save path; hashes them as the server does."""

    def __init__(self, model: str, root: Path) -> None:
        self.base = load_base(model, "float32")  # only the prompts' initial values come from it
        self.task, self.rows, _ = load_named("raft/twitter_complaints", "test")
        self.root = root
        self.seeds = itertools.count(1000)

    def write(self, folder: Path, n_tokens: int) -> str:
        """A new prompt folder (a fresh seed each call); returns its version."""
        model, tokenizer = self.base
        prompt = init_prompt(n_tokens, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=next(self.seeds))
        tuned = TunedPrompt.build(Base(model, tokenizer), prompt, self.task, record=FolderRecord(init="sampled-vocab"))
        tuned.save_pretrained(folder)
        return prompt_version(TunedPrompt.from_pretrained(folder, base=self.base))


def rss_mb(pid: int) -> float:
    """The server's resident memory, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def idle_rss_mb(pid: int) -> float:
    """The server's RSS once idle: it hands freed memory back after IDLE_RELEASE_S without work, so what
    remains is what it holds (a leak included), not the peak of the last batches."""
    time.sleep(IDLE_RELEASE_S + 2)
    return rss_mb(pid)


def churn(url: str, names: list[str], sizes: dict[str, int], prompts: Prompts, ledger: Ledger, args, stop) -> None:
    """Until `stop`: every `churn_interval` s, the next churn task is replaced, or deleted then re-added."""
    admin = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/zip"}
    staging = prompts.root.parent / "uploads"

    def put(name: str) -> bool:
        folder = staging / f"{name}-{time.monotonic_ns()}"
        version = prompts.write(folder, sizes[name])
        archive = zip_folder(folder)
        event = ledger.begin(name, "put", version, time.monotonic())
        status, body, _ = call(f"{url}/v1/tasks/{name}", "PUT", headers=admin, raw=archive)
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
        if status != 200 or body.get("prompt_version") != version:
            ledger.errors.append(f"PUT {name}: {status} {body!r:.200} (expected version {version})")
            return False
        event.ack = time.monotonic()
        return True

    def delete(name: str) -> bool:
        event = ledger.begin(name, "delete", None, time.monotonic())
        status, body, _ = call(f"{url}/v1/tasks/{name}", "DELETE", headers=admin)
        if status != 200:
            ledger.errors.append(f"DELETE {name}: {status} {body!r:.200}")
            return False
        event.ack = time.monotonic()
        return True

    for turn in itertools.count():
        if stop.wait(args.churn_interval):
            return
        name = names[turn % len(names)]
        try:
            if (turn // len(names)) % 2 == 0:
                put(name)
            elif delete(name):
                time.sleep(args.churn_interval / 2)  # requests meanwhile get 404, counted as expected
                put(name)  # always re-added before the next turn, so the end state is known
        except OSError as exc:
            ledger.errors.append(f"admin {name}: {exc}")


def traffic(url: str, names: list[str], prompts: Prompts, count: int, args, deadline: float, seed: int, pid: int):
    """`count` requests from `args.clients` threads; returns every reply (fewer if the deadline passed).
    Prints progress (replies, rate, the server's RSS) every 30 s."""
    replies: list[Reply] = []
    lock = threading.Lock()
    tickets = iter(range(count))
    headers = {"Authorization": f"Bearer {KEY}"}

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        while time.monotonic() < deadline:
            with lock:
                if next(tickets, None) is None:
                    return
            task = rng.choice(names)
            row = rng.choice(prompts.rows)
            if rng.random() < COMPLETE_SHARE:
                kind, path = "complete", "/v1/completions"
                body = {"model": task, "prompt": prompts.task.render(row), "max_tokens": rng.randint(1, 4)}
                body |= {"temperature": 0.8, "top_p": 0.95, "seed": 7} if rng.random() < 0.1 else {"temperature": 0}
            else:
                kind, path = "classify", "/v1/classify"
                body = {"task": task, "inputs": [row["Tweet text"]]}
            sent = time.monotonic()
            try:
                status, reply, _ = call(url + path, "POST", body, headers)
            except OSError:
                status, reply = "connection", None
            version = None
            if status == 200:
                version = reply.get("prompt_version") if kind == "classify" else reply.get("system_fingerprint")
            with lock:
                replies.append(Reply(task, kind, status, version, sent, time.monotonic()))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    started = shown = time.monotonic()
    for thread in threads:
        while thread.is_alive():  # short joins, so Ctrl-C is seen at once
            thread.join(0.5)
            if time.monotonic() - shown > 30:
                shown, elapsed = time.monotonic(), time.monotonic() - started
                print(f"  {len(replies)}/{count} in {elapsed:.0f} s ({len(replies) / elapsed:.2f}/s), "
                      f"server RSS {rss_mb(pid):.0f} MB", flush=True)  # fmt: skip
    return replies


def judge(replies: list[Reply], ledger: Ledger) -> dict:
    statuses = Counter(str(r.status) for r in replies)
    stale = [why for r in replies if r.status == 200 and (why := ledger.stale(r))]
    expected = sum(1 for r in replies if r.status == 404 and ledger.expected_404(r))
    errors = sum(n for status, n in statuses.items() if status != "200") - expected
    return {
        "requests": len(replies),
        "classify": sum(r.kind == "classify" for r in replies),
        "complete": sum(r.kind == "complete" for r in replies),
        "statuses": dict(sorted(statuses.items())),
        "expected_404": expected,
        "errors": errors,
        "5xx": sum(n for status, n in statuses.items() if status.startswith("5")),
        "stale": len(stale),
        "stale_examples": stale[:5],
    }


@contextlib.contextmanager
def churning(url: str, names: list[str], sizes: dict[str, int], prompts: Prompts, ledger: Ledger, args):
    """The admin thread, running for the duration of the block; stopped (after its current operation) on exit."""
    stop = threading.Event()
    admin = threading.Thread(target=churn, args=(url, names, sizes, prompts, ledger, args, stop), daemon=True)
    admin.start()
    try:
        yield
    finally:
        stop.set()
        admin.join(120)


def measured(url: str, names: list[str], prompts: Prompts, args, pid: int) -> dict:
    """The warm-up, RSS at idle, the measured requests (RSS sampled every 10 s), RSS at idle again."""
    deadline = time.monotonic() + 60 * args.max_minutes
    print(f"warm-up: {args.warmup} requests", flush=True)
    warm = traffic(url, names, prompts, args.warmup, args, deadline, 1, pid)
    samples = [idle_rss_mb(pid)]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(10):
            samples.append(rss_mb(pid))

    threading.Thread(target=sample, daemon=True).start()
    print(f"measured: {args.requests} requests; server RSS {samples[0]:.0f} MB", flush=True)
    begun = time.monotonic()
    replies = traffic(url, names, prompts, args.requests, args, deadline, 2, pid)
    duration = time.monotonic() - begun
    sampling.set()
    return {"warm": warm, "replies": replies, "duration": duration, "rss": samples, "rss_end": idle_rss_mb(pid)}


def run(args) -> dict:
    names = [f"t{i:02d}" for i in range(args.tasks)]
    sizes = {name: 4 + (i * 4) % 17 for i, name in enumerate(names)}  # 4 to 20 virtual tokens
    ledger = Ledger()
    with tempfile.TemporaryDirectory(prefix="softprompt-soak-") as tmp:
        root = Path(tmp) / "prompts"
        (Path(tmp) / "uploads").mkdir()
        prompts = Prompts(args.model, root)
        for name in names:
            ledger.begin(name, "put", prompts.write(root / name, sizes[name]), float("-inf")).ack = float("-inf")
        (Path(tmp) / "key").write_text(KEY)
        (Path(tmp) / "token").write_text(TOKEN)
        extra = ["--dtype", args.dtype, "--api-key-file", f"{tmp}/key", "--admin-token-file", f"{tmp}/token"]
        keyed = {"Authorization": f"Bearer {KEY}"}
        with running_server(args.model, root, *extra, headers=keyed) as url:
            assert url.startswith("http://127.0.0.1:")  # loopback only
            pid = call(url + "/healthz", headers=keyed)[1]["pid"]
            served = {t["name"]: t["prompt_version"] for t in call(url + "/v1/tasks", headers=keyed)[1]}
            if served != {name: ledger.events[name][0].version for name in names}:
                raise RuntimeError("the server's prompt versions differ from the folders written")
            with churning(url, names[: args.churn], sizes, prompts, ledger, args):
                phase = measured(url, names, prompts, args, pid)
            final = {t["name"]: t["prompt_version"] for t in call(url + "/v1/tasks", headers=keyed)[1]}
    return report(args, ledger, phase, final)


def report(args, ledger: Ledger, phase: dict, final: dict[str, str]) -> dict:
    """The figures and the facts to check, as one JSON-ready dict."""
    replies, duration, rss_start, rss_end = phase["replies"], phase["duration"], phase["rss"][0], phase["rss_end"]
    warmup = judge(phase["warm"], ledger)
    done = [event for events in ledger.events.values() for event in events if event.ack is not None]
    last = {name: [e.version for e in events if e.kind == "put" and e.ack is not None][-1]
            for name, events in ledger.events.items()}  # fmt: skip
    return {
        **judge(replies, ledger),
        "warmup": {k: warmup[k] for k in ("requests", "statuses", "expected_404", "errors", "stale")},
        "finished": len(replies) == args.requests and len(phase["warm"]) == args.warmup,
        "duration_s": round(duration, 1),
        "requests_per_s": round(len(replies) / duration, 2),
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_max_mb": round(max(phase["rss"] + [rss_end]), 1),
        "rss_growth_pct": round(100 * (rss_end / rss_start - 1), 2),
        "admin_puts": sum(e.kind == "put" and e.seq > 0 for e in done),
        "admin_deletes": sum(e.kind == "delete" for e in done),
        "admin_errors": ledger.errors[:5],
        "final_versions_wrong": sorted(name for name in last if final.get(name) != last[name]),
        "clients": args.clients,
        "tasks": args.tasks,
        "churned_tasks": args.churn,
        "model": args.model,
        "dtype": args.dtype if args.dtype != "auto" else _auto_dtype(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


def _auto_dtype() -> str:
    from softprompt.utils.hardware import auto_dtype_reason

    return auto_dtype_reason(serving=True)[0]  # what the server it soaks picks


def verdict(result: dict, max_growth: float) -> list[str]:
    """The failed criteria, as lines (empty: passed)."""
    checks = {
        "all requests answered in time": result["finished"],
        "zero stale answers": result["stale"] == 0 and result["warmup"]["stale"] == 0,
        "zero 5xx": result["5xx"] == 0,
        "no errors but expected 404s": result["errors"] == 0 and result["warmup"]["errors"] == 0,
        "every admin operation acknowledged": not result["admin_errors"],
        "every task at its last acknowledged version": not result["final_versions_wrong"],
        f"RSS growth under {max_growth}% after warm-up": result["rss_growth_pct"] < max_growth,
    }
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return [name for name, ok in checks.items() if not ok]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="auto", help="the server's --dtype")
    parser.add_argument("--requests", type=int, default=20_000, help="measured requests, after the warm-up")
    parser.add_argument("--warmup", type=int, default=1000, help="requests before RSS is first read")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--churn", type=int, default=10, help="tasks replaced / deleted and re-added")
    parser.add_argument("--churn-interval", type=float, default=1.0, help="seconds between admin operations")
    parser.add_argument("--max-minutes", type=float, default=120, help="stop sending after this long (a failure)")
    parser.add_argument("--max-rss-growth", type=float, default=5.0, help="percent, end over after warm-up")
    args = parser.parse_args()
    if not 0 < args.churn <= args.tasks:
        parser.error("--churn must be between 1 and --tasks")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds like Ctrl-C: the server is stopped
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("soak: interrupted; server stopped", file=sys.stderr)
        return 130
    print(json.dumps(result), flush=True)
    print(
        f"{result['requests']} requests in {result['duration_s']} s ({result['requests_per_s']}/s), "
        f"statuses {result['statuses']} ({result['expected_404']} expected 404s), 5xx {result['5xx']}, "
        f"stale {result['stale']}; RSS {result['rss_start_mb']} -> {result['rss_end_mb']} MB "
        f"({result['rss_growth_pct']:+.2f}%), max {result['rss_max_mb']} MB"
    )
    failed = verdict(result, args.max_rss_growth)
    print("soak: PASSED" if not failed else f"soak: FAILED ({', '.join(failed)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
