"""The paper's Figure 1 for one task: prompt tuning against model tuning and prompt design, over model sizes.

`run_compare` trains or builds one run per (model, method, seed) in OUTPUT/runs/, scores each on the dev rows
and on held-out rows, and appends a row to OUTPUT/compare.csv as each run ends: so a stopped comparison goes
on where it stopped (done rows are skipped; a run cut short resumes from its checkpoint). `plot_compare`
draws score against parameters (log x axis), one line per method, mean and range over the seeds, with the
majority class beside them.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..data.loading import load_data
from ..data.tasks import Row
from ..models.base import EMBEDDED, Base, load_base
from ..models.prepacked import prepacked_parameters
from ..prompts.checkpoint import latest_checkpoint
from ..prompts.method import MODEL_TUNING, PROMPT_DESIGN, PROMPT_TUNING, Method, method_named
from ..prompts.tuned import TunedPrompt
from ..training.run_folder import RunFolder
from ..training.train import TrainConfig, fit
from ..utils.errors import ParameterError
from .prompt_design import run_design
from .results_table import mean_and_range, read_csv, write_csv

METHODS = (PROMPT_TUNING.name, MODEL_TUNING.name, PROMPT_DESIGN.name)  # the order of the tables and lines
# Each kind of task's two scores: the first and the second (the one the seeds' range and the plot show).
SCORES = {"classification": ("accuracy", "macro_f1"), "text": ("exact_match", "f1")}
INTEGERS = ("parameters", "seed", "test_n")


def columns(kind: str) -> tuple[str, ...]:
    """compare.csv's columns for a kind of task: the majority class only where there are classes."""
    first, second = SCORES[kind]
    majority = (f"majority_{first}", f"majority_{second}") if kind == "classification" else ()
    return ("model", "parameters", "method", "seed", f"dev_{first}", f"dev_{second}", "test_n", f"test_{first}",
            f"test_{second}", *majority, "seconds", "base_dtype")  # fmt: skip


def kind_of(results: Sequence[dict]) -> str:
    """The kind of task a table's rows score."""
    return "text" if results and "test_exact_match" in results[0] else "classification"


def parameter_count(model, ref: str) -> int:
    """Parameters as the model has them: every distinct tensor (prepacked linear weights, held outside
    `parameters()`, included), less an output layer that only copies the input embeddings (the Qwen GGUFs
    store a requantised copy of the vocabulary matrix the original shares)."""
    total = sum(param.numel() for param in model.parameters()) + prepacked_parameters(model)
    copied = ref in EMBEDDED and EMBEDDED[ref].copied_output
    return total - model.get_output_embeddings().weight.numel() if copied else total


def _run(config: TrainConfig, method: Method, shared: Base | None) -> tuple[TunedPrompt, float]:
    """One run of `method`; a run that leaves the model frozen shares `shared`, the base it never changes (model
    tuning loads its own copy, in float32)."""
    start = time.perf_counter()
    if not method.trains:
        return run_design(config, base=shared, overwrite=True), time.perf_counter() - start
    config = dataclasses.replace(config, method=method.name)
    resume = latest_checkpoint(RunFolder(config.output).checkpoints) is not None
    tuned = fit(config, base=None if method.trains_model else shared, resume=resume, overwrite=not resume)
    return tuned, time.perf_counter() - start


def run_compare(
    base_config: TrainConfig,
    models: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    test_rows: Sequence[Row],
    output: Path,
) -> list[dict]:
    """Every (model, method, seed) not yet in OUTPUT/compare.csv, then the plot; returns all rows."""
    target = output / "compare.csv"
    results = read_csv(target, INTEGERS) if target.is_file() else []
    done = {(r["model"], r["method"], r["seed"]) for r in results}
    bases: dict[tuple[str, str], Base] = {}  # the frozen base of the model at hand, shared by the runs that keep it
    grid = [(m, method, s) for m in models for method in methods for s in seeds]
    for number, (model, method, seed) in enumerate(grid, 1):
        if (model, method, seed) in done:
            continue
        print(f"compare: run {number}/{len(grid)}: {model} {method} seed {seed}", file=sys.stderr)
        folder = output / "runs" / model.replace("/", "_") / method / f"seed-{seed}"
        config = dataclasses.replace(base_config, model=model, seed=seed, output=str(folder))
        if not method_named(method).trains_model and (model, config.dtype) not in bases:
            bases.clear()
            bases[model, config.dtype] = load_base(model, config.dtype, device=config.device)
        try:
            tuned, seconds = _run(config, method_named(method), bases.get((model, config.dtype)))
        except ParameterError as exc:  # model tuning that cannot fit here: the plot shows where it ends
            if exc.param != "method":
                raise
            print(f"compare: {model} {method} not run: {exc}", file=sys.stderr)
            continue
        dev_rows = load_data(config).dev
        dev = tuned.evaluate(dev_rows, config.eval_batch_size, progress=config.progress) if dev_rows else {}
        test = tuned.evaluate(test_rows, config.eval_batch_size, progress=config.progress)
        kind = "text" if tuned.task.generates else "classification"
        table = columns(kind)
        row = {"model": model, "parameters": parameter_count(tuned.lm.model, model), "method": method, "seed": seed,
               "test_n": test["n"], "seconds": round(seconds, 1), "base_dtype": tuned.record.base_dtype or ""}
        for score in SCORES[kind]:
            row.update({f"dev_{score}": dev.get(score, ""), f"test_{score}": test[score]})
            if f"majority_{score}" in table:
                row[f"majority_{score}"] = test[f"majority_{score}"]
        results.append(row)
        write_csv(results, target, table)
        RunFolder(folder).prune()  # recorded, so never resumed: a grid of model-tuning runs would fill the disk
    plot_compare(results, output / "compare.png")
    return results


def summarize(results: Sequence[dict]) -> list[dict]:
    """One row per (model, method), smallest model first, methods in `METHODS` order: the held-out scores' mean
    over the seeds and the macro-F1's range, the dev macro-F1's mean; then the majority class (the same held-out
    rows for every run)."""
    first, second = SCORES[kind_of(results)]
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in sorted(results, key=lambda r: (r["parameters"], r["model"], METHODS.index(r["method"]))):
        groups.setdefault((row["model"], row["method"]), []).append(row)
    summary = []
    for (model, method), rows in groups.items():
        f1 = [r[f"test_{second}"] for r in rows]
        dev = [r[f"dev_{second}"] for r in rows if r[f"dev_{second}"] != ""]
        summary.append({"model": model, "parameters": rows[0]["parameters"], "method": method, "seeds": len(rows),
                        f"test_{first}": statistics.mean(r[f"test_{first}"] for r in rows),
                        f"test_{second}": statistics.mean(f1), "f1_range": f"{min(f1):.3f}-{max(f1):.3f}",
                        f"dev_{second}": statistics.mean(dev) if dev else ""})  # fmt: skip
    if results and f"majority_{first}" in results[-1]:
        last = results[-1]
        summary.append({"model": "majority class", f"test_{first}": last[f"majority_{first}"],
                        f"test_{second}": last[f"majority_{second}"]})  # fmt: skip
    return summary


def summary_columns(results: Sequence[dict]) -> tuple[str, ...]:
    """The columns `summarize`'s rows fill, for this table's kind of task."""
    first, second = SCORES[kind_of(results)]
    return ("model", "parameters", "method", "seeds", f"test_{first}", f"test_{second}", "f1_range", f"dev_{second}")


def plot_compare(results: Sequence[dict], target: Path, metric: str | None = None) -> None:
    """Score against parameters, one line per method: the mean over seeds, and a band from lowest to highest
    (by default of the second score: macro-F1, or a text-to-text task's F1)."""
    metric = metric or f"test_{SCORES[kind_of(results)][1]}"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..prompts.plots import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for method in [m for m in METHODS if any(r["method"] == m for r in results)]:
        sizes = sorted({r["parameters"] for r in results if r["method"] == method})
        scores = [[r[metric] for r in results if r["method"] == method and r["parameters"] == n] for n in sizes]
        means, low, high = mean_and_range(scores)
        (line,) = ax.plot(sizes, means, marker="o", label=method)
        ax.fill_between(sizes, low, high, color=line.get_color(), alpha=0.2)
    majority = metric.replace("test_", "majority_")
    if results and majority in results[0]:
        ax.axhline(max(r[majority] for r in results), color="grey", linestyle="--", label="majority class")
    ax.set_xscale("log")
    ax.set(xlabel="model parameters", ylabel=f"held-out {metric.removeprefix('test_')}", title="method and scale")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, target)
