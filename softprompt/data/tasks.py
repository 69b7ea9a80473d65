"""Tasks: a template and what follows it over rows (rows.py reads them), the shipped named tasks, dev splits.

A row is a dict of strings. A Task turns a row into the model's input text (the template with the row's
fields filled in) and what the model is trained to say after it: for classification the label's word (the
verbalizer's, else the label value itself), for a text-to-text task the row's target text (a field, or a
template of fields), with the references it is scored against (a JSON list field, else the target).
"""

from __future__ import annotations

import json
import os
import random
import string
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..utils.errors import ParameterError, SoftpromptError
from .qa_files import from_hub, read_qa
from .rows import Row, read_hub, read_rows

__all__ = [  # Row and read_rows are rows.py's, kept importable from here
    "Row",
    "Task",
    "data_dir",
    "load_named",
    "named_tasks",
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


def _fields(template: str, param: str) -> list[str]:
    """The field names of a template; a one-line error naming `param` where it is not plain {field}s."""
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ParameterError(param, "{template!r}: {exc}", template=template, exc=exc) from None
    if any(not f for f, _, _ in parsed):
        raise ParameterError(param, "{template!r}: every {{}} must name a field, e.g. {{text}}", template=template)
    if any(spec or conv for _, spec, conv in parsed):
        raise ParameterError(param, "{template!r}: use plain {{field}} placeholders (no ':' or '!')",
                             template=template)  # fmt: skip
    return [f for f, _, _ in parsed]


# A text-to-text task's keys and their defaults; a classification task leaves them out of its JSON, so the
# folders of classification prompts read and hash as they always have.
TEXT_KEYS = {"target_field": None, "target_template": None, "references_field": None, "max_new_tokens": None,
             "stop": ["\n"], "max_length": None}  # fmt: skip


TASK_KEYS = ("name", "template", "label_field", "labels", "verbalizer", "init_text", *TEXT_KEYS, "chat")


@dataclass
class Task:
    """How rows become text and targets. Saved with every prompt so eval and serving reuse it."""

    template: str
    label_field: str | None = None
    labels: list[str] = field(default_factory=list)
    verbalizer: dict[str, str] = field(default_factory=dict)
    name: str = "custom"
    init_text: str | None = None
    target_field: str | None = None  # text-to-text: the column the model learns to write after the input
    target_template: str | None = None  # or the target written from the row's fields
    references_field: str | None = None  # a column holding a JSON list of references (else the target)
    max_new_tokens: int | None = None  # tokens decoded (default: 64, or the longest label's)
    stop: list[str] = field(default_factory=lambda: ["\n"])  # decoding ends at the first of these
    max_length: int | None = None  # this task's default for tokens of input + target (else 64)
    chat: bool = False  # the input as a user message through the model's chat template, the target as the reply

    def __post_init__(self) -> None:
        self.fields = _fields(self.template, "template")
        if self.target_field and self.target_template:
            raise ParameterError("target_field", "give one of {target_field} or {target_template}, not both")
        if self.generates and (self.label_field or self.labels):
            raise ParameterError("target_field", "a text-to-text task has a target, not a {label_field}")
        self.target_fields = _fields(self.target_template, "target_template") if self.target_template else (
            [self.target_field] if self.target_field else [])  # fmt: skip
        for name in ("max_new_tokens", "max_length"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ParameterError(name, "must be at least 1")
        unknown = [label for label in self.verbalizer if self.labels and label not in self.labels]
        if unknown:
            raise ParameterError("verbalizer", "{label!r} is not a label (labels: {labels})", label=unknown[0],
                                 labels=", ".join(self.labels))  # fmt: skip

    @property
    def generates(self) -> bool:
        """A text-to-text task: the model writes a target, scored by generation metrics, not a label."""
        return bool(self.target_field or self.target_template)

    @property
    def label_words(self) -> list[str]:
        return [self.verbalizer.get(label, label) for label in self.labels]

    def render(self, row: Row) -> str:
        return _FieldFormatter().vformat(self.template, (), {name: row.get(name, "") for name in self.fields})

    def target(self, row: Row) -> str:
        """A text-to-text row's target: its target field, or the target template filled in."""
        if self.target_template:
            return _FieldFormatter().vformat(self.target_template, (), {n: row.get(n, "") for n in self.target_fields})
        return row[self.target_field]

    def scorable(self, row: Row) -> bool:
        """Whether a text-to-text row holds what its output is scored against (unlabelled rows do not)."""
        if self.references_field:
            return self.references_field in row
        return all(name in row for name in self.target_fields) and bool(self.target(row).strip())

    def references(self, row: Row) -> list[str]:
        """What a text-to-text row's output is scored against: its references field's list, else its target."""
        if not self.references_field:
            return [self.target(row)]
        return json.loads(row[self.references_field])

    def check(self, rows: list[Row], source: str, labelled: bool = True) -> None:
        """Fail on the first problem with a message naming the source, row and field. `labelled`: the rows must
        hold their label (classification) or their target and references (text-to-text) too."""
        if not rows:
            raise SoftpromptError(f"{source}: no rows")
        columns = rows[0].keys()
        known = ", ".join(map(show, columns))
        for name in self.fields:
            if name not in columns:
                raise SoftpromptError(f"{source}: template field {{{show(name)}}} is not a column (columns: {known})")
        if labelled and not self.generates and (self.label_field is None or self.label_field not in columns):
            raise SoftpromptError(f"{source}: label field {self.label_field!r} is not a column (columns: {known})")
        labels = set(self.labels)
        for number, row in enumerate(rows, 1):
            where = f"{source} row {number}"
            missing = [name for name in self.fields if name not in row]
            if missing:
                raise SoftpromptError(f"{where}: no field {missing[0]!r}")
            if not self.render(row).strip():
                fields = ", ".join(map(show, self.fields)) or "no fields"
                raise SoftpromptError(f"{where}: empty input (nothing rendered from {fields})")
            if labelled and self.generates:
                self._check_target(row, where)
            elif self.generates and self.references_field in row:  # an unlabelled row may still hold references
                self._check_references(row, where)
            elif labelled and row.get(self.label_field) not in labels:
                raise SoftpromptError(f"{where}: {show(self.label_field)}={row.get(self.label_field)!r} is not one "
                                      f"of the labels ({', '.join(map(show, self.labels))})")  # fmt: skip

    def _check_target(self, row: Row, where: str) -> None:
        """A text-to-text row has its target, not empty, and its references are a list of strings."""
        missing = [name for name in self.target_fields if name not in row]
        if missing:
            raise SoftpromptError(f"{where}: no target field {show(missing[0])}")
        if not self.target(row).strip():
            raise SoftpromptError(f"{where}: empty target ({', '.join(map(show, self.target_fields))})")
        if self.references_field and self.references_field not in row:
            raise SoftpromptError(f"{where}: no references field {show(self.references_field)}")
        if self.references_field:
            self._check_references(row, where)

    def _check_references(self, row: Row, where: str) -> None:
        try:
            references = json.loads(row[self.references_field])
        except ValueError:
            references = None
        if not (isinstance(references, list) and references and all(isinstance(r, str) for r in references)):
            raise SoftpromptError(f"{where}: {show(self.references_field)} is not a JSON list of strings "
                                  f"(got {row[self.references_field][:60]!r})")  # fmt: skip

    def label_index(self, row: Row) -> int:
        return self.labels.index(row[self.label_field])

    def to_json(self) -> dict:
        text = {key: getattr(self, key) for key, default in TEXT_KEYS.items() if getattr(self, key) != default}
        return {
            "name": self.name,
            "template": self.template,
            "label_field": self.label_field,
            "labels": self.labels,
            "verbalizer": self.verbalizer,
            "init_text": self.init_text,
            **text,
            **({"chat": True} if self.chat else {}),  # kept out when off: older folders read and hash the same
        }

    @classmethod
    def from_json(cls, data: dict) -> Task:
        return cls(**{k: data[k] for k in TASK_KEYS if k in data})


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
    task = Task.from_json(config)
    if split not in config["files"]:
        raise SoftpromptError(f"task {name} has no split {split!r} (splits: {', '.join(config['files'])})")
    data = data or data_dir()
    if data is not None:
        source = str(data / config["files"][split])
        if config.get("format") == "qa":  # SQuAD JSON or MRQA jsonl, each context cut around its question
            return task, read_qa(source, config["context_words"]), source
        return task, read_rows(source), source
    hub = config["hub"]
    hub_split = hub.get("splits", {}).get(split, split)
    source = f"hf:{hub['path']}:{hub['name']}:{hub_split}"
    rows = read_hub(hub["path"], hub["name"], hub_split, hub.get("label_names", False))
    return task, from_hub(rows, config["context_words"], source) if config.get("format") == "qa" else rows, source


def rename_columns(rows: list[Row], mapping: dict[str, str], source: str) -> list[Row]:
    """Rows of another data set under the training task's field names: mapping is {training field: column}."""
    if rows:
        missing = [column for column in mapping.values() if column not in rows[0]]
        if missing:
            raise SoftpromptError(f"{source}: no column {show(missing[0])} (columns: {', '.join(map(show, rows[0]))})")
    return [{**row, **{field: row[column] for field, column in mapping.items()}} for row in rows]


def split_dev(rows: list[Row], fraction: float, seed: int, label_field: str | None) -> tuple[list[Row], list[Row]]:
    """Carve a dev split from training rows (never tune on the test split): stratified by label where there is
    one, a seeded sample of the rows for a text-to-text task (`label_field` None)."""
    if not 0 < fraction < 1:
        raise ParameterError("dev_fraction", "must be between 0 and 1, got {fraction}", fraction=fraction)
    by_label: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_label.setdefault(row[label_field] if label_field else "", []).append(index)
    rng = random.Random(seed)
    dev: set[int] = set()
    for indices in by_label.values():
        rng.shuffle(indices)
        dev.update(indices[: max(1, round(len(indices) * fraction))])
    return [r for i, r in enumerate(rows) if i not in dev], [r for i, r in enumerate(rows) if i in dev]
