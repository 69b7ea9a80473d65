"""The prompt store: every task's prompt on one shared base model, loaded from and installed into a folder.

Task names are folder names and are validated, so no name reaches outside the store. Uploads are unpacked
into a staging folder, checked by loading them, then renamed into place: a task is replaced whole or not
at all, and the new prompt object means no stale prompt cache can answer for it.

Each task carries a version, a content hash of what decides its answers, that the API returns with every
answer. A request looks its task up once, on arrival, and its job holds that entry until it is answered: a
request that arrives after a replacement's reply has been sent always runs on the new prompt, one already
admitted finishes on the prompt it was admitted with, and nothing is ever answered by a mix of the two.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import re
import shutil
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from ..models.base import Base
from ..prompts import checkpoint
from ..prompts.model_card import CARD
from ..prompts.tuned import TunedPrompt
from ..utils.errors import SoftpromptError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
FOLDER_FILES = (checkpoint.CONFIG, checkpoint.WEIGHTS, checkpoint.META, CARD)  # the card is optional
MAX_UNPACKED = 64 * 2**20


def valid_name(name: str) -> bool:
    """A name that is a task folder's name and cannot reach outside the store."""
    return bool(NAME.fullmatch(name)) and ".." not in name


def check_name(name: str) -> str:
    if not valid_name(name):
        raise SoftpromptError(f"task name {name!r}: use 1-64 letters, digits, '_', '-', '.' (no '..')")
    return name


def prompt_version(tuned: TunedPrompt) -> str:
    """12 hex digits of SHA-256 over all that decides a task's answers (prompt tensor, task, max_length).

    A content hash, not a counter: a client can compute it for the folder it uploaded, the same folder has
    the same version on every server and after restarts, and re-uploading identical files changes nothing."""
    tensor = tuned.lm.prompt.embedding.detach().to("cpu", torch.float32).contiguous()
    digest = hashlib.sha256(json.dumps([list(tensor.shape), tuned.task.to_json(), tuned.max_length]).encode())
    digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class Served:
    """A task as the server holds it: the loaded prompt and its version, looked up together."""

    tuned: TunedPrompt
    version: str
    created: int  # when this server loaded this version (Unix seconds): OpenAI's `created` of a model

    @classmethod
    def of(cls, tuned: TunedPrompt) -> Served:
        return cls(tuned, prompt_version(tuned), int(time.time()))


class PromptStore:
    """Thread-safe map of task name -> Served (prompt and version), all on the same (model, tokenizer).

    The folder itself changes only under an exclusive lock on its `.lock` file, so other processes sharing it
    (replicas, see shared_store.py) read a task's folder whole, never half replaced."""

    def __init__(self, base: Base, root: Path) -> None:
        self.base = base
        self.root = Path(root)
        self._tasks: dict[str, Served] = {}
        self._lock = threading.Lock()
        self.lookups = 0  # requests that looked a task up
        self.loads = 0  # prompts loaded from the folder (at start, on upload, or on a miss: shared_store.py)

    @contextlib.contextmanager
    def folder_lock(self, shared: bool):
        """A lock on the folder across processes (flock): shared to read a task folder, exclusive to swap one."""
        try:
            handle = open(self.root / ".lock", "a")
        except OSError:  # a read-only shared folder: nobody can swap a task in it, so readers need no lock
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load_all(self) -> None:
        if not self.root.is_dir():
            raise SoftpromptError(f"{self.root}: no such prompts folder")
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and not folder.name.startswith(".") and (folder / checkpoint.WEIGHTS).is_file():
                self._tasks[check_name(folder.name)] = Served.of(self._load(folder))

    def _load(self, folder: Path) -> TunedPrompt:
        self.loads += 1
        tuned = TunedPrompt.from_pretrained(folder, base=self.base)
        if tuned.record.base_model not in (None, self.base.model.name_or_path):
            raise SoftpromptError(
                f"{folder}: prompt was trained on {tuned.record.base_model!r}, this server runs "
                f"{self.base.model.name_or_path!r}"
            )
        return tuned

    def get(self, name: str) -> Served | None:
        with self._lock:
            self.lookups += 1
            return self._tasks.get(name)

    def items(self) -> list[tuple[str, Served]]:
        """Every task served, by name."""
        with self._lock:
            return sorted(self._tasks.items())

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._tasks)

    def loaded(self) -> list[Served]:
        """The prompts held in memory now (here: all of them)."""
        with self._lock:
            return list(self._tasks.values())

    def install(self, name: str, files: dict[str, bytes]) -> Served:
        """Validate and install a prompt folder given as {file name: bytes}; replaces an existing task.

        Requests looking the task up after this returns get the new prompt (the map is updated under the lock
        before the return, and the caller answers only after it)."""
        check_name(name)
        unknown = sorted(set(files) - set(FOLDER_FILES))
        if unknown:
            raise SoftpromptError(f"upload: unexpected file {unknown[0]!r} (allowed: {', '.join(FOLDER_FILES)})")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".upload-{name}-", dir=self.root))
        try:
            for file_name, data in files.items():
                (staging / file_name).write_bytes(data)
            served = Served.of(self._load(staging))
            with self.folder_lock(shared=False), self._lock:
                retired = self._retire(name)
                staging.rename(self.root / name)
                self._tasks[name] = served
            if retired:
                shutil.rmtree(retired, ignore_errors=True)
            return served
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def remove(self, name: str) -> bool:
        with self.folder_lock(shared=False), self._lock:
            if not self._known(name):
                return False
            self._tasks.pop(name, None)
            retired = self._retire(check_name(name))
        if retired:
            shutil.rmtree(retired, ignore_errors=True)
        return True

    def _known(self, name: str) -> bool:
        """Whether `name` is a task served here (called under the lock)."""
        return name in self._tasks

    def _retire(self, name: str) -> Path | None:
        """Move a task's folder out of the way (a rename, so readers see it whole or gone); the caller deletes
        what this returns once the lock is released."""
        target = self.root / name
        if not target.exists():
            return None
        retired = Path(tempfile.mkdtemp(prefix=f".retired-{name}-", dir=self.root))
        target.rename(retired / name)
        return retired


def unzip_folder(data: bytes) -> dict[str, bytes]:
    """The prompt files of a zipped folder (flat, or inside one top folder), refusing anything odd.

    Only the known file names are read, whatever path the archive gives them, so nothing can be written
    outside the task's folder (zip-slip), and the unpacked size is capped (zip bombs).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise SoftpromptError("upload: not a zip archive") from None
    files: dict[str, bytes] = {}
    total = 0
    for info in archive.infolist():
        if info.is_dir():
            continue
        path = PurePosixPath(info.filename)
        if path.is_absolute() or ".." in path.parts or "\\" in info.filename or len(path.parts) > 2:
            raise SoftpromptError(f"upload: refused path {info.filename!r} in the zip")
        if path.name not in FOLDER_FILES:
            raise SoftpromptError(f"upload: unexpected file {info.filename!r} (allowed: {', '.join(FOLDER_FILES)})")
        total += info.file_size
        if total > MAX_UNPACKED:
            raise SoftpromptError(f"upload: unpacks to more than {MAX_UNPACKED // 2**20} MiB")
        with archive.open(info) as handle:
            files[path.name] = handle.read(MAX_UNPACKED + 1)
        if len(files[path.name]) > info.file_size:
            raise SoftpromptError(f"upload: {info.filename!r} is larger than its zip header says")
    if checkpoint.WEIGHTS not in files:
        raise SoftpromptError(f"upload: the zip holds no {checkpoint.WEIGHTS}")
    return files
