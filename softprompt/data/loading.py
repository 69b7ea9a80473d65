"""A run's data: the task and its training rows, and the rows it is evaluated on while it trains.

From a shipped task (`--task`, its files under --data-dir or $SOFTPROMPT_DATA, else the hub) or a file with
a template and a label field; the evaluation rows from --eval, else a stratified dev split carved from the
training rows (stratified by label for classification). Training, prompt design and the comparison grid all
read their data here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple, Protocol

from ..utils.errors import ParameterError
from .label_options import labels_found, parse_labels, parse_mapping
from .tasks import Row, Task, load_named, read_rows, split_dev


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
    target_field: str | None
    target_template: str | None
    references_field: str | None
    max_new_tokens: int | None
    verbalizer: str | None
    chat: bool
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
    decoding = {"max_new_tokens": options.max_new_tokens} if options.max_new_tokens else {}
    if options.chat:
        decoding["chat"] = True
    target = {key: getattr(options, key) for key in ("target_field", "target_template", "references_field")}
    if options.task:
        if options.label_field or options.labels or any(target.values()):
            raise ParameterError("task", "takes its {label_field}, {labels} and targets from the task; give them "
                                 "with {train}")  # fmt: skip
        task, rows, source = load_named(options.task, "train", Path(options.data_dir) if options.data_dir else None)
        overrides = {"template": options.template} if options.template else {}
        if verbalizer:
            overrides["verbalizer"] = verbalizer
        # checked again, as a task built from flags is
        return dataclasses.replace(task, **overrides, **decoding), rows, source
    text = bool(target["target_field"] or target["target_template"])
    if text and (options.label_field or options.labels):
        raise ParameterError("target_field", "give {target_field} (text to text) or {label_field} (classification), "
                             "not both")  # fmt: skip
    if not options.template or not (options.label_field or text):
        raise ParameterError("train", "needs {template} and a {label_field} (classification) or a {target_field} "
                             "or {target_template} (text to text)")  # fmt: skip
    source, rows = options.train, read_rows(options.train)
    if text:
        return Task(options.template, name=Path(source).stem, **target, **decoding), rows, source
    labels = parse_labels(options.labels) if options.labels else labels_found(rows, options.label_field, source)
    task = Task(options.template, options.label_field, labels, verbalizer, name=Path(source).stem, **decoding)
    return task, rows, source
