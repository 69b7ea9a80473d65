"""Ablations in the paper's style (Lester et al. §3.2): a grid over prompt length, initialisation and seed,
one trained prompt and one held-out result row per run, plus a plot of score against prompt length."""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..data.loading import load_data
from ..data.tasks import Row
from ..models.base import Base
from ..models.prompt import INITS
from ..training.train import TrainConfig, fit
from ..utils.errors import ParameterError
from .results_table import mean_and_range, read_csv, write_csv

COLUMNS = ("num_virtual_tokens", "init", "seed", "n", "accuracy", "macro_f1", "loss", "train_steps")
INTEGERS = ("num_virtual_tokens", "seed", "n", "train_steps")


def run_sweep(
    base_config: TrainConfig,
    lengths: Sequence[int],
    inits: Sequence[str],
    seeds: Sequence[int],
    test_rows: Sequence[Row],
    output: Path,
    base: Base | None = None,
) -> list[dict]:
    """Train every (length, init, seed) and evaluate it on `test_rows`; rows go to output/sweep.csv as they come."""
    unknown = [init for init in inits if init not in INITS]
    if unknown:
        raise ParameterError(
            "inits", "unknown {init!r} (choose from {choices})", init=unknown[0], choices=", ".join(INITS)
        )
    if not lengths or min(lengths) < 1:
        raise ParameterError("lengths", "must be positive integers")
    if load_data(base_config).task.generates:
        raise ParameterError("task", "the sweep tables accuracy and macro-F1 of classification; for a text-to-text "
                             "task, run `compare` or one `train` a point")  # fmt: skip
    results: list[dict] = []
    grid = list(itertools.product(lengths, inits, seeds))
    for number, (length, init, seed) in enumerate(grid, 1):
        print(f"sweep: run {number}/{len(grid)}: {length} tokens, {init}, seed {seed}", file=sys.stderr)
        folder = output / "runs" / f"len{length}-{init}-seed{seed}"
        config = dataclasses.replace(base_config, num_virtual_tokens=length, init=init, seed=seed, output=str(folder))
        tuned = fit(config, base=base, overwrite=True)
        base = base or tuned.base
        metrics = tuned.evaluate(test_rows, config.eval_batch_size, progress=config.progress)
        steps = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])["step"]
        results.append({"num_virtual_tokens": length, "init": init, "seed": seed, "n": metrics["n"],
                        "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "loss": metrics["loss"],
                        "train_steps": steps})  # fmt: skip
        write_csv(results, output / "sweep.csv", COLUMNS)
    plot_sweep(results, output / "sweep.png")
    return results


def read_sweep(source: Path) -> list[dict]:
    """The rows of a sweep.csv, typed."""
    return read_csv(source, INTEGERS)


def plot_sweep(results: Sequence[dict], target: Path, metric: str = "accuracy") -> None:
    """Score against prompt length (log scale), one line per initialisation, mean and range over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..prompts.plots import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for init in dict.fromkeys(r["init"] for r in results):
        lengths = sorted({r["num_virtual_tokens"] for r in results if r["init"] == init})
        scores = [[r[metric] for r in results if r["init"] == init and r["num_virtual_tokens"] == n] for n in lengths]
        means, low, high = mean_and_range(scores)
        below, above = [m - lo for m, lo in zip(means, low)], [hi - m for m, hi in zip(means, high)]
        ax.errorbar(lengths, means, yerr=[below, above], marker="o", capsize=3, label=init)
    ax.set_xscale("log")
    ax.set(xlabel="number of prompt tokens", ylabel=f"held-out {metric}", title="prompt length and initialisation")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, target)
