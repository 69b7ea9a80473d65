"""The paper's studies as commands: the length and init sweep, the methods-by-scale comparison and zero-shot
transfer; each reads the training flags (commands.train_config) and the held-out rows it scores."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..utils.errors import SoftpromptError
from .commands import train_config


def _names(text: str) -> list[str]:
    """A comma-separated list, items stripped, empty ones dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _numbers(text: str, option: str) -> list[int]:
    try:
        return [int(item) for item in _names(text)]
    except ValueError:
        raise SoftpromptError(f"{option}: expected comma-separated integers, got {text!r}") from None


def _test_rows(args: argparse.Namespace, config) -> list[dict]:
    """The held-out rows of a grid: --test FILE, or --task's --test-split; the first --test-limit of them."""
    from ..data.tasks import load_named, read_rows

    if args.test:
        test_rows = read_rows(args.test)
    elif config.task:
        test_rows = load_named(config.task, args.test_split, Path(config.data_dir) if config.data_dir else None)[1]
    else:
        raise SoftpromptError(f"{args.command} needs --test FILE (or --task with a --test-split)")
    return test_rows[: args.test_limit] if args.test_limit else test_rows


def sweep(args: argparse.Namespace) -> None:
    from ..toolbox.sweep import plot_sweep, read_sweep, run_sweep

    if args.plot:
        plot_sweep(read_sweep(Path(args.plot)), Path(args.plot).with_suffix(".png"))
        return
    config = train_config(args)
    test_rows = _test_rows(args, config)
    lengths, seeds = _numbers(args.lengths, "--lengths"), _numbers(args.seeds, "--seeds")
    inits = _names(args.inits)
    results = run_sweep(config, lengths, inits, seeds, test_rows, Path(config.output))
    for row in results:
        print(json.dumps(row))


def compare(args: argparse.Namespace) -> None:
    from ..toolbox.compare import INTEGERS, METHODS, plot_compare, run_compare, summarize, summary_columns
    from ..toolbox.results_table import format_table, read_csv

    if args.plot:
        results = read_csv(Path(args.plot), INTEGERS)
        plot_compare(results, Path(args.plot).with_suffix(".png"))
        print(format_table(summarize(results), summary_columns(results), args.markdown))
        return
    config = train_config(args)
    methods = _names(args.methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SoftpromptError(f"--methods: unknown {unknown[0]!r} (choose from {', '.join(METHODS)})")
    models = _names(args.models)
    seeds = _numbers(args.seeds, "--seeds")
    results = run_compare(config, models, methods, seeds, _test_rows(args, config), Path(config.output))
    print(f"compare: {len(results)} runs in {Path(config.output) / 'compare.csv'} and compare.png", file=sys.stderr)
    print(format_table(summarize(results), summary_columns(results), args.markdown))


def transfer(args: argparse.Namespace) -> None:
    from ..training.train import fit

    config = train_config(args)
    targets = _transfer_targets(args, config.data_dir)  # read before training: a bad target costs no run
    tuned = fit(config, overwrite=args.overwrite)
    for source, rows in targets:
        tuned.task.check(rows, source)
        result = tuned.evaluate(rows, config.eval_batch_size, progress=config.progress)
        print(json.dumps({"source": config.task or config.train, "target": source, **result}), flush=True)


def _transfer_targets(args: argparse.Namespace, data_dir: str | None) -> list[tuple[str, list[dict]]]:
    """(name, rows) of each target: --target with --target-map, and each of --target-tasks; the first
    --target-limit rows of each."""
    from ..data.label_options import parse_mapping
    from ..data.tasks import load_named, read_rows, rename_columns

    if not args.target and not args.target_tasks:
        raise SoftpromptError("transfer needs --target FILE with --target-map, or --target-tasks")
    if bool(args.target) != bool(args.target_map):
        raise SoftpromptError("--target and --target-map go together")
    targets = []
    if args.target:
        targets.append((args.target, rename_columns(read_rows(args.target), parse_mapping(args.target_map,
                                                                                           "target_map"), args.target)))
    for item in _names(args.target_tasks or ""):
        name, _, split = item.partition(":")
        rows = load_named(name, split or "test", Path(data_dir) if data_dir else None)[1]
        targets.append((f"{name}:{split or 'test'}", rows))
    return [(name, rows[: args.target_limit] if args.target_limit else rows) for name, rows in targets]


COMMANDS = {"sweep": sweep, "compare": compare, "transfer": transfer}
