"""Files uploaded for fine-tuning (OpenAI's /v1/files), checked line by line on upload and kept beside the prompts.

A file holds rows in one of three shapes: OpenAI's prompt/completion lines (`{"prompt", "completion"}`), its
chat lines (`{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`), or our own rows (`{field:
text}`, JSONL, CSV or TSV) that a job's template renders. The first row decides the shape and every row must
keep it; a bad row is one error naming the file, the line and the field, and nothing is stored. What is stored
is the rows a training run reads (a chat line as `{"user", "assistant"}`), as JSONL, so a job and `softprompt
train --train FILE` read the very same file.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path, PurePath

from ..data.rows import Row, parse_rows
from ..prompts.checkpoint import atomic_write
from ..utils.errors import SoftpromptError

FILES_DIR = ".files"  # in the prompts folder; a dot folder is never a task
PURPOSE = "fine-tune"
PROMPT_COMPLETION, CHAT, ROWS = "prompt-completion", "chat", "rows"


@dataclass(frozen=True)
class StoredFile:
    """An uploaded file as the server keeps it: OpenAI's file fields, and the shape and count of its rows."""

    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    shape: str  # prompt-completion, chat or rows
    rows: int
    fields: tuple[str, ...]  # the stored rows' fields, what a job's template may name

    def to_openai(self) -> dict:
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "status_details": f"{self.rows} rows: {self.described()}"}  # fmt: skip

    def described(self) -> str:
        if self.shape == ROWS:
            return "fields " + ", ".join(self.fields)
        return "prompt and completion" if self.shape == PROMPT_COMPLETION else "chat messages"


class FileStore:
    """The uploaded files: `.files/ID.jsonl` (the rows) and `.files/ID.json` (the file's fields), each written
    atomically, so a server killed during an upload keeps the file whole or not at all."""

    def __init__(self, prompts: Path, max_bytes: int, max_rows: int) -> None:
        self.root = Path(prompts).resolve() / FILES_DIR  # absolute: a job's recipe names its rows' path
        self.max_bytes, self.max_rows = max_bytes, max_rows
        self._lock = threading.Lock()

    def create(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        """Check and keep an upload; SoftpromptError (one line naming the problem) and nothing kept if bad."""
        if purpose != PURPOSE:
            raise SoftpromptError(f"purpose: {purpose!r} is not served here (use {PURPOSE!r})")
        if len(data) > self.max_bytes:
            raise SoftpromptError(f"file: {filename} is {len(data)} bytes, over this server's limit of "
                                  f"{self.max_bytes} (--max-file-bytes)")  # fmt: skip
        name = PurePath(filename or "upload.jsonl").name
        shape, rows = training_rows(parse_rows(data, name, PurePath(name).suffix or ".jsonl"), name)
        if len(rows) > self.max_rows:
            raise SoftpromptError(f"file: {name} has {len(rows)} rows, over this server's limit of {self.max_rows} "
                                  "(--max-file-rows)")  # fmt: skip
        stored = StoredFile(f"file-{time_ordered_id()}", len(data), int(time.time()), name, purpose, shape,
                            len(rows), tuple(rows[0]))  # fmt: skip
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.rows_path(stored.id), "".join(json.dumps(row) + "\n" for row in rows).encode())
        atomic_write(self.root / f"{stored.id}.json", json.dumps(asdict(stored)).encode())
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        meta = self.root / f"{file_id}.json"
        if not file_id.startswith("file-") or not file_id[5:].isalnum() or not meta.is_file():
            return None
        data = json.loads(meta.read_text())
        return StoredFile(**{**data, "fields": tuple(data["fields"])})

    def every(self) -> list[StoredFile]:
        """Every file, oldest first."""
        found = (self.get(path.stem) for path in self.root.glob("file-*.json"))
        return sorted((f for f in found if f is not None), key=lambda f: f.id)

    def delete(self, file_id: str) -> bool:
        with self._lock:
            if self.get(file_id) is None:
                return False
            (self.root / f"{file_id}.json").unlink()
            self.rows_path(file_id).unlink(missing_ok=True)
            return True

    def rows_path(self, file_id: str) -> Path:
        """The stored rows: what a job trains on (its `--train` file)."""
        return self.root / f"{file_id}.jsonl"


def time_ordered_id() -> str:
    """24 hex digits, the first 16 the time in nanoseconds: ids that sort as they were made (then random)."""
    return f"{time.time_ns():016x}{secrets.token_hex(4)}"


def training_rows(rows: list[Row], source: str) -> tuple[str, list[Row]]:
    """The file's shape and its rows as a run reads them; a row out of shape is one error naming its line."""
    first = rows[0]
    shape = CHAT if "messages" in first else PROMPT_COMPLETION if set(first) == {"prompt", "completion"} else ROWS
    out = []
    for number, row in enumerate(rows, 1):
        where = f"{source} row {number}"  # a row of the file's (its line in a JSONL file without blank lines)
        if shape == CHAT:
            out.append(_chat_row(row, where))
            continue
        if shape == PROMPT_COMPLETION and set(row) != {"prompt", "completion"}:
            raise SoftpromptError(f"{where}: expected exactly the fields prompt and completion, as line 1 has")
        if shape == ROWS and set(row) != set(first):
            missing = sorted(set(first) ^ set(row))[0]
            raise SoftpromptError(f"{where}: field {missing!r}: every row needs the fields line 1 has")
        out.append(row)
    return shape, out


def _chat_row(row: Row, where: str) -> Row:
    """A chat line as a row: its user message and the assistant's reply (one turn; the prompt takes the place of
    a system message)."""
    if set(row) != {"messages"}:
        extra = sorted(set(row) - {"messages"})
        raise SoftpromptError(f"{where}: {extra[0] if extra else 'messages'}: a chat line holds messages alone")
    try:
        messages = json.loads(row["messages"])
    except json.JSONDecodeError:
        messages = None
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise SoftpromptError(f"{where}: messages: expected a list of {{role, content}} objects")
    roles = [m.get("role") for m in messages]
    if roles != ["user", "assistant"]:
        raise SoftpromptError(f"{where}: messages: roles {roles}; one user message then one assistant reply is "
                              "trained (a soft prompt stands in for the system message)")  # fmt: skip
    for index, message in enumerate(messages):
        if not isinstance(message.get("content"), str) or set(message) - {"role", "content"}:
            raise SoftpromptError(f"{where}: messages[{index}]: expected {{role, content}} with content a string")
    return {"user": messages[0]["content"], "assistant": messages[1]["content"]}
