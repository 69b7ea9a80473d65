"""Tasks: a template, labels and a verbalizer over rows (rows.py reads them), the shipped named tasks, dev splits.

A row is a dict of strings. A Task turns a row into the model's input text (the template with the
row's fields filled in) and the label's word (the verbalizer's, else the label value itself).
"""

from __future__ import annotations

import os
import random
import string
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..utils.errors import ParameterError, SoftpromptError
from .rows import Row, read_hub, read_rows

__all__ = [  # Row and read_rows are rows.py's, kept importable from here
    "Row",
    "Task",
    "data_dir",
    "labels_found",
    "load_named",
    "named_tasks",
    "parse_labels",
    "parse_mapping",
    "read_rows",
    "rename_columns",
    "show",
    "split_dev",
]


def show(value: object) -> str:
    """A name or value for a one-line message: as is when printable, else its repr (newlines escaped)."""
    text = str(value)
    return text if text.isprintable() else repr(text)


class _FieldFormatter(string.Formatter):
    """str.format with whole field names as keys, so columns like "a.b" or "x[0]" work."""

    def get_field(self, field_name, args, kwargs):
        return kwargs[field_name], field_name


@dataclass
class Task:
    """How rows become text and labels. Saved with every prompt so eval and serving reuse it."""

    template: str
    label_field: str | None = None
    labels: list[str] = field(default_factory=list)
    verbalizer: dict[str, str] = field(default_factory=dict)
    name: str = "custom"
    init_text: str | None = None

    def __post_init__(self) -> None:
        try:
            parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(self.template) if f is not None]
        except ValueError as exc:
            raise ParameterError("template", "{template!r}: {exc}", template=self.template, exc=exc) from None
        self.fields = [f for f, _, _ in parsed]
        if any(not f for f in self.fields):
            raise ParameterError(
                "template", "{template!r}: every {{}} must name a field, e.g. {{text}}", template=self.template
            )
        if any(spec or conv for _, spec, conv in parsed):
            raise ParameterError(
                "template", "{template!r}: use plain {{field}} placeholders (no ':' or '!')", template=self.template
            )
        unknown = [label for label in self.verbalizer if self.labels and label not in self.labels]
        if unknown:
            raise ParameterError("verbalizer", "{label!r} is not a label (labels: {labels})", label=unknown[0],
                                 labels=", ".join(self.labels))  # fmt: skip

    @property
    def label_words(self) -> list[str]:
        return [self.verbalizer.get(label, label) for label in self.labels]

    def render(self, row: Row) -> str:
        return _FieldFormatter().vformat(self.template, (), {name: row.get(name, "") for name in self.fields})

    def check(self, rows: list[Row], source: str, labelled: bool = True) -> None:
        """Fail on the first problem with a message naming the source, row and field."""
        if not rows:
            raise SoftpromptError(f"{source}: no rows")
        columns = rows[0].keys()
        for name in self.fields:
            if name not in columns:
                known = ", ".join(map(show, columns))
                raise SoftpromptError(f"{source}: template field {{{show(name)}}} is not a column (columns: {known})")
        if labelled and (self.label_field is None or self.label_field not in columns):
            raise SoftpromptError(
                f"{source}: label field {self.label_field!r} is not a column (columns: {', '.join(map(show, columns))})"
            )
        known = set(self.labels)
        for number, row in enumerate(rows, 1):
            missing = [name for name in self.fields if name not in row]
            if missing:
                raise SoftpromptError(f"{source} row {number}: no field {missing[0]!r}")
            if not self.render(row).strip():
                fields = ", ".join(map(show, self.fields)) or "no fields"
                raise SoftpromptError(f"{source} row {number}: empty input (nothing rendered from {fields})")
            if not labelled:
                continue
            value = row.get(self.label_field)
            if value not in known:
                raise SoftpromptError(
                    f"{source} row {number}: {show(self.label_field)}={value!r} is not one of the labels "
                    f"({', '.join(map(show, self.labels))})"
                )

    def label_index(self, row: Row) -> int:
        return self.labels.index(row[self.label_field])

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "template": self.template,
            "label_field": self.label_field,
            "labels": self.labels,
            "verbalizer": self.verbalizer,
            "init_text": self.init_text,
        }

    @classmethod
    def from_json(cls, data: dict) -> Task:
        keys = ("name", "template", "label_field", "labels", "verbalizer", "init_text")
        return cls(**{k: data[k] for k in keys if k in data})


def data_dir() -> Path | None:
    """Where named tasks find their files: $SOFTPROMPT_DATA, else none (use the hub)."""
    env = os.environ.get("SOFTPROMPT_DATA")
    return Path(env) if env else None


def named_tasks() -> dict[str, dict]:
    configs = resources.files("softprompt.data") / "task_configs"
    loaded = [tomllib.loads(item.read_text()) for item in configs.iterdir() if item.name.endswith(".toml")]
    return {config["name"]: config for config in loaded}


def load_named(name: str, split: str, data: Path | None = None) -> tuple[Task, list[Row], str]:
    """A shipped task and one of its splits, from the data directory if set, else the hub."""
    tasks = named_tasks()
    if name not in tasks:
        raise SoftpromptError(f"unknown task {name!r} (known: {', '.join(sorted(tasks))})")
    config = tasks[name]
    keys = ("name", "template", "label_field", "labels", "verbalizer", "init_text")
    task = Task(**{k: config[k] for k in keys if k in config})
    if split not in config["files"]:
        raise SoftpromptError(f"task {name} has no split {split!r} (splits: {', '.join(config['files'])})")
    data = data or data_dir()
    if data is not None:
        source = str(data / config["files"][split])
        return task, read_rows(source), source
    hub = config["hub"]
    hub_split = hub.get("splits", {}).get(split, split)
    source = f"hf:{hub['path']}:{hub['name']}:{hub_split}"
    return task, read_hub(hub["path"], hub["name"], hub_split, hub.get("label_names", False)), source


def parse_mapping(text: str, param: str) -> dict[str, str]:
    """`"0=negative,1=positive"` -> {"0": "negative", "1": "positive"}; errors name `param` (e.g. verbalizer)."""
    mapping = {}
    for item in _split_list(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ParameterError(param, "expected VALUE=WORD pairs separated by commas, got {item!r}", item=item)
        mapping[key.strip()] = value.strip()
    return mapping


def _split_list(text: str) -> list[str]:
    """Comma-separated items; a backslash escapes a comma inside an item."""
    items, current, chars = [], "", iter(text)
    for char in chars:
        if char == "\\":
            current += next(chars, "")
        elif char == ",":
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return [item for item in items if item.strip()]


def parse_labels(text: str) -> list[str]:
    return [item.strip() for item in _split_list(text)]


def labels_found(rows: Iterable[Row], label_field: str, source: str) -> list[str]:
    """The label values of a file, sorted so label order never depends on row order (default for --labels)."""
    found: set[str] = set()
    for number, row in enumerate(rows, 1):
        if label_field not in row:
            raise SoftpromptError(f"{source}: label field {label_field!r} is not a column")
        if not row[label_field].strip():
            raise SoftpromptError(f"{source} row {number}: empty {show(label_field)}")
        found.add(row[label_field])
    return sorted(found)


def rename_columns(rows: list[Row], mapping: dict[str, str], source: str) -> list[Row]:
    """Rows of another data set under the training task's field names: mapping is {training field: column}."""
    if rows:
        missing = [column for column in mapping.values() if column not in rows[0]]
        if missing:
            raise SoftpromptError(f"{source}: no column {show(missing[0])} (columns: {', '.join(map(show, rows[0]))})")
    return [{**row, **{field: row[column] for field, column in mapping.items()}} for row in rows]


def split_dev(rows: list[Row], fraction: float, seed: int, label_field: str) -> tuple[list[Row], list[Row]]:
    """Carve a stratified dev split from training rows (never tune on the test split)."""
    if not 0 < fraction < 1:
        raise ParameterError("dev_fraction", "must be between 0 and 1, got {fraction}", fraction=fraction)
    by_label: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_label.setdefault(row[label_field], []).append(index)
    rng = random.Random(seed)
    dev: set[int] = set()
    for indices in by_label.values():
        rng.shuffle(indices)
        dev.update(indices[: max(1, round(len(indices) * fraction))])
    return [r for i, r in enumerate(rows) if i not in dev], [r for i, r in enumerate(rows) if i in dev]
