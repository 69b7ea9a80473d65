"""A folder's record (softprompt.json): how its prompt or model was made and what it scored, typed and versioned.

Read and written here alone. Format 2 adds `format` to the keys that format 1 (the untyped dict of earlier
releases, which had no `format`) wrote, so a folder of either format reads the same; a key this release does
not know is left out, and a format newer than this release's is one line. A PEFT folder has no record: it
reads as a prompt-tuning record with no task, which must then be given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.tasks import Row, Task
from ..utils.errors import SoftpromptError
from .checkpoint import META, atomic_write, json_bytes, read_json
from .method import PROMPT_TUNING, Method, method_named

FORMAT = 2


@dataclass
class FolderRecord:
    method: Method = PROMPT_TUNING
    task: Task | None = None
    max_length: int = 64
    base_model: str | None = None  # None in a model-tuned folder, which is its own model
    seed: int | None = None
    init: str | None = None
    init_text: str | None = None
    shots: int | None = None  # prompt design and --init prompt-design: the examples that fit
    examples: list[Row] | None = None  # prompt design's examples
    base_dtype: str | None = None  # what `auto` chose on the machine that made it
    hardware: dict[str, Any] | None = None
    train_config: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None  # on the dev rows (the best step's with --keep-best)
    step: int | None = None
    train_seconds: float | None = None
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)  # `eval --record`, by data name

    @classmethod
    def read(cls, folder: str | Path) -> FolderRecord:
        """The folder's record; the default one where it has none (a PEFT folder)."""
        path = Path(folder) / META
        return cls.from_json(read_json(path), str(path)) if path.is_file() else cls()

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> FolderRecord:
        version = data.get("format", 1)
        if not isinstance(version, int) or version > FORMAT:
            raise SoftpromptError(f"{source}: format {version!r} is newer than this softprompt reads ({FORMAT})")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["method"] = method_named(data.get("method", PROMPT_TUNING.name), f"{source}: method")
        if isinstance(values.get("task"), dict):
            values["task"] = Task.from_json(values["task"])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.update(format=FORMAT, method=self.method.name, task=self.task.to_json() if self.task else None)
        return {key: value for key, value in data.items() if value is not None and value != {}}

    def write(self, folder: str | Path) -> None:
        """Written whole (atomically), and last of a folder's files: a folder with a record is complete."""
        atomic_write(Path(folder) / META, json_bytes(self.to_json()))
