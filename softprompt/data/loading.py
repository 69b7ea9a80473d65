"""A run's data: the task and its training rows, and the rows it is evaluated on while it trains.

From a shipped task (`--task`, its files under --data-dir or $SOFTPROMPT_DATA, else the hub) or a file with
a template and a label field; the evaluation rows from --eval, else a stratified dev split carved from the
training rows. Training, prompt design and the comparison grid all read their data here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple, Protocol

from ..utils.errors import ParameterError
from .tasks import Row, Task, labels_found, load_named, parse_labels, parse_mapping, read_rows, split_dev


class DataOptions(Protocol):
    """The options that say what a run reads (TrainConfig has them all)."""

    task: str | None
    train: str | None
    eval: str | None
    data_dir: str | None
    dev_fraction: float
    train_limit: int
    template: str | None
    label_field: str | None
    labels: str | None
    verbalizer: str | None
    seed: int


class RunData(NamedTuple):
    task: Task
    train: list[Row]
    dev: list[Row] | None


def load_data(options: DataOptions) -> RunData:
    """The task and its training rows, plus evaluation rows from --eval or a dev split carved from train."""
    task, rows, source = _task_and_rows(options)
    task.check(rows, source)
    if options.train_limit and options.train_limit < len(rows):
        # A stratified subset, so a large training set (SST-2's 67k rows) can run as a few-shot task.
        _, rows = split_dev(rows, options.train_limit / len(rows), options.seed, task.label_field)
    dev = None
    if options.eval:
        dev = read_rows(options.eval)
        task.check(dev, options.eval)
    elif options.dev_fraction:
        rows, dev = split_dev(rows, options.dev_fraction, options.seed, task.label_field)
    return RunData(task, rows, dev)


def _task_and_rows(options: DataOptions) -> tuple[Task, list[Row], str]:
    verbalizer = parse_mapping(options.verbalizer, "verbalizer") if options.verbalizer else {}
    if options.task:
        if options.label_field or options.labels:
            raise ParameterError("task", "takes its {label_field} and {labels} from the task; give them with {train}")
        task, rows, source = load_named(options.task, "train", Path(options.data_dir) if options.data_dir else None)
        overrides = {"template": options.template} if options.template else {}
        if verbalizer:
            overrides["verbalizer"] = verbalizer
        return dataclasses.replace(task, **overrides), rows, source  # checked again, as a task built from flags is
    if not options.template or not options.label_field:
        raise ParameterError("train", "needs {template} and {label_field}")
    source, rows = options.train, read_rows(options.train)
    labels = parse_labels(options.labels) if options.labels else labels_found(rows, options.label_field, source)
    return Task(options.template, options.label_field, labels, verbalizer, name=Path(source).stem), rows, source
