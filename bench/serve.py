"""Serving throughput and latency over HTTP on loopback, 4 tasks mixed: ours with mixed-task batching, the
same server with batching off, and PEFT serving one request at a time (switching adapters), in one run.

    python bench/serve.py [--model smollm2-135m] [--concurrency 1,8,64] [--requests 256] [--memory-tasks 20]
                          [--dtype auto]   (the servers'; PEFT's side runs in float32, its fastest)

Each client sends single-input /v1/classify requests drawn round-robin from four real data sets (RAFT tweets,
SST-2, CR, SUBJ), each task with its own prompt and labels. Prints one JSON line per (mode, concurrency) with
throughput (requests/s) and p50/p99 latency, the batching/no-batching ratio, and the server's RSS with 1 and
with 20 loaded tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("SOFTPROMPT_DATA") or ROOT.parent / "shared" / "data")

from anchor import peft_base  # noqa: E402

from softprompt.data.tasks import Task, read_rows  # noqa: E402
from softprompt.models.base import Base, load_base  # noqa: E402
from softprompt.models.prompt import init_prompt  # noqa: E402
from softprompt.prompts.record import FolderRecord  # noqa: E402
from softprompt.prompts.tuned import TunedPrompt  # noqa: E402
from softprompt.utils.hardware import describe, resolve_dtype  # noqa: E402
from tests.serving import call, running_server  # noqa: E402

TASKS = {  # name: (task, file, virtual tokens)
    "tweets": (Task("Tweet text : {Tweet text} Label : ", "Label", ["complaint", "no complaint"]),
               "raft_twitter_complaints/test_labeled_from_original.csv", 8),
    "sst2": (Task("Sentence : {sentence} Sentiment : ", "label", ["0", "1"], {"0": "negative", "1": "positive"}),
             "sst2/dev.tsv", 20),
    "cr": (Task("Review : {sentence} Sentiment : ", "label", ["negative", "positive"]), "cr/test.jsonl", 8),
    "subj": (Task("Sentence : {sentence} Type : ", "label", ["subjective", "objective"]), "subj/test.jsonl", 20),
}  # fmt: skip


def write_prompts(root: Path, base, copies: int = 1) -> None:
    model, tokenizer = base
    for copy in range(copies):
        for seed, (name, (task, _, n_tokens)) in enumerate(TASKS.items()):
            prompt = init_prompt(n_tokens, model.get_input_embeddings(), tokenizer, "class-label",
                                 label_words=task.label_words, seed=seed + 10 * copy)  # fmt: skip
            folder = root / (name if copy == 0 else f"{name}-{copy}")
            record = FolderRecord(init="class-label")
            TunedPrompt.build(Base(model, tokenizer), prompt, task, record=record).save_pretrained(folder)


def workload(count: int) -> list[tuple[str, dict]]:
    rows = {name: read_rows(DATA / file)[:200] for name, (_, file, _) in TASKS.items()}
    names = list(TASKS)
    return [(names[i % 4], rows[names[i % 4]][(i // 4) % 200]) for i in range(count)]


def drive(url: str, jobs: list[tuple[str, dict]], concurrency: int) -> dict:
    latencies, errors = [], []
    lock = threading.Lock()

    def one(job):
        start = time.perf_counter()
        status, body, _ = call(url + "/v1/classify", "POST", {"task": job[0], "inputs": [job[1]]})
        with lock:
            latencies.append(time.perf_counter() - start)
            if status != 200:
                errors.append(body)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, jobs))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(jobs),
        "errors": len(errors),
        "throughput_rps": len(jobs) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
    }


def peft_sequential(model_ref: str, prompts: Path, jobs: list[tuple[str, dict]]) -> dict:
    """PEFT's way: one PeftModel with the four adapters, set_adapter per request, labels scored by forward."""
    from peft import PeftModel

    from softprompt.data.batching import target_batch

    model, tokenizer = peft_base(model_ref)
    names = list(TASKS)
    peft = PeftModel.from_pretrained(model, prompts / names[0], adapter_name=names[0])
    for name in names[1:]:
        peft.load_adapter(prompts / name, adapter_name=name)
    tuned = {name: TunedPrompt.from_pretrained(prompts / name, base=Base(model, tokenizer)) for name in names}
    latencies = []
    start = time.perf_counter()
    with torch.inference_mode():
        for name, row in jobs:
            tick = time.perf_counter()
            peft.set_adapter(name)
            encoder = tuned[name].encoder
            source = encoder.input_ids(row)
            batch = target_batch([source] * len(encoder.label_ids), encoder.label_ids, tokenizer.pad_token_id,
                                 device="cpu")
            n = TASKS[name][2]
            logits = peft(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, n:].float()
            logprobs = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
            width = batch.input_ids.shape[1] - 1
            keep = torch.arange(width)[None] >= (width - batch.target_lengths)[:, None]
            int((logprobs * keep).sum(1).argmax())
            latencies.append(time.perf_counter() - tick)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(jobs),
        "errors": 0,
        "throughput_rps": len(jobs) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
    }


def rss_mb(url: str) -> float:
    pid = call(url + "/healthz")[1]["pid"]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--memory-tasks", type=int, default=20)
    parser.add_argument("--dtype", default="auto", help="the servers' base dtype: auto, float32 or bfloat16")
    args = parser.parse_args()
    args.dtype = resolve_dtype(args.dtype, serving=True)
    print(json.dumps({"machine": describe(), "dtype": args.dtype}), flush=True)
    base = load_base(args.model, args.dtype)
    jobs = workload(args.requests)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts"
        write_prompts(prompts, base)
        for mode, extra in (("batching", []), ("no-batching", ["--no-batching"])):
            with running_server(args.model, prompts, *extra, "--max-queue", "4096", "--dtype", args.dtype) as url:
                drive(url, jobs[:16], 4)  # warm-up: every task's prompt cache
                for concurrency in map(int, args.concurrency.split(",")):
                    result = {"mode": mode, "concurrency": concurrency, **drive(url, jobs, concurrency)}
                    results[(mode, concurrency)] = result
                    print(json.dumps(result), flush=True)
        result = {"mode": "peft-sequential", "concurrency": 1, **peft_sequential(args.model, prompts, jobs)}
        print(json.dumps(result), flush=True)
        for concurrency in map(int, args.concurrency.split(",")):
            on, off = results[("batching", concurrency)], results[("no-batching", concurrency)]
            print(
                json.dumps(
                    {
                        "ratio": "batching/no-batching",
                        "concurrency": concurrency,
                        "throughput": on["throughput_rps"] / off["throughput_rps"],
                        "vs_peft": on["throughput_rps"] / result["throughput_rps"],
                    }
                )
            )
        memory = {}
        for count in (1, args.memory_tasks):
            folder = Path(tmp) / f"memory-{count}"
            write_prompts(folder, base, copies=-(-count // 4))
            for extra in sorted(folder.iterdir())[count:]:
                for file in extra.iterdir():
                    file.unlink()
                extra.rmdir()
            with running_server(args.model, folder, "--dtype", args.dtype) as url:
                for name in sorted(p.name for p in folder.iterdir()):  # every task's prompt cache filled
                    row = workload(4)[list(TASKS).index(name.split("-")[0])][1]
                    call(url + "/v1/classify", "POST", {"task": name, "inputs": [row]})
                memory[count] = rss_mb(url)
        print(
            json.dumps(
                {
                    "rss_mb_1_task": memory[1],
                    f"rss_mb_{args.memory_tasks}_tasks": memory[args.memory_tasks],
                    "overhead_pct": 100 * (memory[args.memory_tasks] / memory[1] - 1),
                }
            )
        )


if __name__ == "__main__":
    main()
