"""Serving over replicas: throughput, latency and the prompt-cache hit rate, single process against Ray Serve.

    python bench/serve_scale.py [--requests 300] [--clients 8] [--held-tasks 8] [--zipf 1.1]

One run, one machine, the real default model (float32): the single-process server, then Ray Serve
(`--engine ray`, a local Ray) with 1 and 2 replicas routed by task (model multiplexing), and 2 replicas routed
task-blind (Ray's default balancing), each over 4 and 40 tasks whose popularity follows a Zipf law. `--clients`
threads send single-input /v1/classify requests back to back. Per configuration: requests/s, p50 and p99
latency, and the prompt-cache hit rate: the share of requests whose task's prompt (and its keys/values) the
answering replica already held, from the replicas' own counters (/metrics: lookups and loads). Each replica
holds at most `--held-tasks` tasks.

On 2 cores, 2 replicas cannot be faster than 1; what this measures is the cost of the Ray hop (single
process against 1 replica) and what routing by task does to the hit rate. A simulation of the same Zipf
stream over per-replica LRU caches, checked against the measured hit rates, then projects 8 replicas (8
machines); its figures are labelled as a simulation.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from softprompt.data.tasks import Task  # noqa: E402
from softprompt.models.base import Base, load_base  # noqa: E402
from softprompt.models.prompt import init_prompt  # noqa: E402
from softprompt.prompts.tuned import TunedPrompt  # noqa: E402
from softprompt.utils.hardware import describe  # noqa: E402
from tests.serving import TEXTS, call, free_port, running_server  # noqa: E402

MODEL = "smollm2-135m"
TASK = Task("Tweet text : {text} Label : ", "label", ["complaint", "no complaint"])


def write_tasks(root: Path, count: int) -> list[str]:
    """`count` prompt folders (seeded prompts of 8 virtual tokens) under `root`."""
    model, tokenizer = load_base(MODEL, "float32")
    names = [f"task{index:02d}" for index in range(count)]
    for seed, name in enumerate(names):
        prompt = init_prompt(8, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=seed)
        TunedPrompt.build(Base(model, tokenizer), prompt, TASK).save_pretrained(root / name)
    return names


def zipf_stream(names: list[str], length: int, exponent: float, seed: int) -> list[str]:
    """Tasks drawn with probability proportional to 1 / rank**exponent."""
    weights = [1 / (rank + 1) ** exponent for rank in range(len(names))]
    return random.Random(seed).choices(names, weights, k=length)


def counters(url: str) -> tuple[float, float]:
    """(lookups, loads) summed over the replicas' /metrics."""
    totals = {"softprompt_prompt_lookups": 0.0, "softprompt_prompt_loads": 0.0}
    for line in call(url + "/metrics")[1].splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in totals:
            totals[name] += float(line.split()[-1])
    return totals["softprompt_prompt_lookups"], totals["softprompt_prompt_loads"]


def drive(url: str, stream: list[str], clients: int) -> dict:
    """Send the stream's requests from `clients` threads; latency per request, throughput, hit rate."""

    def ask(index: int) -> float:
        start = time.perf_counter()
        body = {"task": stream[index], "inputs": [TEXTS[index % len(TEXTS)]]}
        status, reply, _ = call(url + "/v1/classify", "POST", body)
        if status != 200:
            raise RuntimeError(f"{stream[index]}: {status} {reply}")
        return time.perf_counter() - start

    lookups, loads = counters(url)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(pool.map(ask, range(len(stream))))
    wall = time.perf_counter() - start
    lookups_after, loads_after = counters(url)
    return {
        "rps": len(stream) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "hit_rate": 1 - (loads_after - loads) / max(1.0, lookups_after - lookups),
    }


def simulate(stream: list[str], warmup: int, replicas: int, held: int, by_task: bool, seed: int = 0) -> float:
    """Hit rate after `warmup` requests of per-replica LRU caches of `held` tasks: routed by task (to a
    replica holding it, else to the one holding fewest) or task-blind (a random replica, as Ray's default
    balancing is for this)."""
    rng = random.Random(seed)
    caches = [OrderedDict() for _ in range(replicas)]
    hits = 0
    for index, task in enumerate(stream):
        if index == warmup:
            hits = 0
        holding = [cache for cache in caches if task in cache] if by_task else []
        cache = holding[0] if holding else (min(caches, key=len) if by_task else rng.choice(caches))
        if task in cache:
            hits += 1
            cache.move_to_end(task)
        else:
            cache[task] = True
            if len(cache) > held:
                cache.popitem(last=False)
    return hits / (len(stream) - warmup)


def ray_app(prompts: Path, replicas: int, held: int, by_task: bool):
    from softprompt.serve import ray_engine
    from softprompt.serve.config import ServeConfig

    config = ServeConfig(model=MODEL, prompts=str(prompts), dtype="float32", replicas=replicas, held_tasks=held,
                         cpus_per_replica=2 / replicas)  # fmt: skip
    return ray_engine.application(config, by_task=by_task)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="measured requests per configuration")
    parser.add_argument("--warmup", type=int, default=40, help="requests before measuring (not timed)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--held-tasks", type=int, default=8)
    parser.add_argument("--zipf", type=float, default=1.1, help="exponent of task popularity")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import ray
    from ray import serve

    print(f"cpu: {describe()}  dtype: float32  model: {MODEL}  torch threads: {torch.get_num_threads()}")
    print(f"clients {args.clients}, {args.requests} measured requests per row, Zipf s={args.zipf}, "
          f"held tasks per replica {args.held_tasks}")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = {count: Path(tmp) / f"tasks{count}" for count in (4, 40)}
        streams = {}
        for count, folder in folders.items():
            names = write_tasks(folder, count)
            streams[count] = zipf_stream(names, args.warmup + args.requests, args.zipf, args.seed)
        for count, folder in folders.items():
            with running_server(MODEL, folder) as url:
                drive(url, streams[count][: args.warmup], args.clients)
                rows.append(("single process", 1, count, drive(url, streams[count][args.warmup :], args.clients)))
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=2**27, log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"
        try:
            for replicas, by_task in ((1, True), (2, True), (2, False)):
                for count, folder in folders.items():
                    serve.run(ray_app(folder, replicas, args.held_tasks, by_task), name="bench", route_prefix="/")
                    drive(url, streams[count][: args.warmup], args.clients)
                    label = "ray, by task" if by_task else "ray, task-blind"
                    rows.append((label, replicas, count, drive(url, streams[count][args.warmup :], args.clients)))
                    serve.delete("bench")
        finally:
            serve.shutdown()
            ray.shutdown()
    report(rows, streams, args)
    return 0


def report(rows: list, streams: dict, args) -> None:
    print(f"\n{'engine':<18}{'replicas':>9}{'tasks':>7}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'hit rate':>10}")
    for label, replicas, count, result in rows:
        print(f"{label:<18}{replicas:>9}{count:>7}{result['rps']:>8.1f}{result['p50_ms']:>9.0f}"
              f"{result['p99_ms']:>9.0f}{result['hit_rate']:>10.3f}")  # fmt: skip
    measured = {(label, replicas, count): result for label, replicas, count, result in rows}
    single, one = measured[("single process", 1, 4)], measured[("ray, by task", 1, 4)]
    print(f"\nRay hop, 4 tasks, 1 replica against one process: throughput ratio {one['rps'] / single['rps']:.2f}, "
          f"p50 +{one['p50_ms'] - single['p50_ms']:.0f} ms")  # fmt: skip
    blind, routed = measured[("ray, task-blind", 2, 40)], measured[("ray, by task", 2, 40)]
    print(f"40 tasks, 2 replicas: hit rate by task {routed['hit_rate']:.3f} against task-blind "
          f"{blind['hit_rate']:.3f}")  # fmt: skip
    print("\nSimulation (LRU per replica over the same Zipf stream; checked against the measured rows):")
    for replicas, by_task in ((1, True), (2, True), (2, False), (8, True), (8, False)):
        label = "by task" if by_task else "task-blind"
        key = ("ray, by task" if by_task else "ray, task-blind", replicas, 40)
        seen = f", measured {measured[key]['hit_rate']:.3f}" if key in measured else " (simulated only)"
        print(f"  {replicas} replicas, {label}: hit rate "
              f"{simulate(streams[40], args.warmup, replicas, args.held_tasks, by_task):.3f}{seen}")  # fmt: skip
    print(f"Projection, not measured: 8 replicas on 8 machines of this kind serve about 8 x {one['rps']:.1f} = "
          f"{8 * one['rps']:.0f} req/s at 4 tasks if the ingress keeps up (it is one replica "
          "here, the first bottleneck at that scale), and routing by task keeps the hit rate of the simulated "
          "row above as tasks outnumber one replica's cache.")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
