"""The same benches in two source trees, alternating, to show a change costs no speed: train step, classify, serve.

    python bench/trees.py BEFORE_TREE AFTER_TREE [--rounds 3] [--prompt FOLDER]

Each round runs, in each tree (its own `bench/` scripts on its own package, with this venv's Python):
bench/train_step.py's own side (median step seconds), bench/classify.py (our rank classification's
rows per second on RAFT's test tweets) and bench/serve.py (mixed-task batching's requests per second at
concurrency 8). The trees alternate within every round, so drift in the machine's speed falls on both.
Prints one JSON line per run, then per bench the medians over the rounds and the ratio after/before (for step
time lower is better; for throughput higher is better).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from softprompt.utils.hardware import describe  # noqa: E402


def _line(lines: list[dict], key: str, value: str) -> dict:
    return next(line for line in lines if line.get(key) == value)


def benches(prompt: str) -> dict[str, tuple[list[str], Callable[[list[dict]], float]]]:
    """name -> (the bench's arguments, what to read from its JSON lines)."""
    serve = ["serve.py", "--concurrency", "8", "--requests", "96", "--memory-tasks", "4", "--dtype", "float32"]
    return {
        "train_step_s": (["train_step.py", "--side", "ours", "--steps", "12", "--dtype", "float32"],
                         lambda lines: lines[-1]["step_s_median"]),
        "classify_rows_per_s": (["classify.py", "--prompt", prompt, "--limit", "200", "--dtype", "float32"],
                                lambda lines: _line(lines, "side", "softprompt-rank")["examples_per_s"]),
        "serve_rps_c8": (serve, lambda lines: _line(lines, "mode", "batching")["throughput_rps"]),
    }  # fmt: skip


def run(tree: Path, args: list[str], read) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, str(tree / "bench" / args[0]), *args[1:]], cwd=tree, env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return read(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt", default=str(ROOT / "tests" / "fixtures" / "folders-v1" / "prompt-tuning"))
    args = parser.parse_args()
    machine = describe()
    print(json.dumps({"machine": machine, "dtype": "float32", "device": "cpu"}), flush=True)
    figures: dict[str, dict[str, list[float]]] = {}
    for number in range(args.rounds):
        for name, (bench, read) in benches(args.prompt).items():
            for label, tree in (("before", args.before), ("after", args.after))[:: 1 if number % 2 == 0 else -1]:
                value = run(tree.resolve(), bench, read)
                figures.setdefault(name, {}).setdefault(label, []).append(value)
                print(json.dumps({"round": number, "bench": name, "tree": label, "value": value}), flush=True)
    for name, sides in figures.items():
        before, after = statistics.median(sides["before"]), statistics.median(sides["after"])
        print(json.dumps({"bench": name, "before_median": before, "after_median": after,
                          "ratio_after_before": after / before, "rounds": args.rounds,
                          "cpu_capability": machine["cpu_capability"]}))  # fmt: skip


if __name__ == "__main__":
    main()
