"""A prompt store that many replicas share: the prompts folder is the truth, read with a version check.

Each replica (ray_engine.py) holds at most `capacity` tasks in memory, the least recently used dropped first.
Every lookup compares the task folder's stamp (inodes and modification times of the folder and its weights,
two `stat` calls) with the stamp of the copy held: an upload or delete on any replica renames folders (under
the folder's exclusive lock, store.py), so after that call returns, every replica's next lookup sees the
change, reloads or answers 404. No broadcast has to reach every replica, and a replica that restarts or
joins later needs no catching up.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from ..models.base import Base
from ..prompts import checkpoint
from ..utils.errors import SoftpromptError
from .store import PromptStore, Served, valid_name

Stamp = tuple[int, int, int, int, int]


def stamp(folder: Path) -> Stamp | None:
    """What changes whenever the folder is replaced (None: no such task)."""
    try:
        here, weights = os.stat(folder), os.stat(folder / checkpoint.WEIGHTS)
    except OSError:
        return None
    return here.st_ino, here.st_mtime_ns, weights.st_ino, weights.st_mtime_ns, weights.st_size


class SharedPromptStore(PromptStore):
    """Tasks loaded on first use from a folder other processes may change, at most `capacity` held."""

    def __init__(self, base: Base, root: Path, capacity: int) -> None:
        super().__init__(base, root)
        if not self.root.is_dir():
            raise SoftpromptError(f"{self.root}: no such prompts folder")
        self.capacity = capacity
        self._tasks: OrderedDict[str, Served] = OrderedDict()
        self._stamps: dict[str, Stamp] = {}

    def get(self, name: str) -> Served | None:
        if not valid_name(name):
            return None
        now = stamp(self.root / name)
        with self._lock:
            self.lookups += 1
            held = self._held(name, now)
            if held is not None:
                self._tasks.move_to_end(name)
                return held
        now, served = self._read(name)
        with self._lock:
            self._hold(name, served, now) if served is not None else self._drop(name)
        return served

    def _held(self, name: str, now: Stamp | None) -> Served | None:
        """The copy held of a task if its folder is still the one it was read from (called under the lock)."""
        return self._tasks[name] if now is not None and self._stamps.get(name) == now else None

    def _read(self, name: str) -> tuple[Stamp | None, Served | None]:
        """A task's folder, read whole (a folder being swapped is read after the swap), and its stamp."""
        with self.folder_lock(shared=True):
            now = stamp(self.root / name)
            return now, Served.of(self._load(self.root / name)) if now is not None else None

    def _known(self, name: str) -> bool:
        """Any task in the shared folder, held here or not."""
        self._drop(name)
        return stamp(self.root / name) is not None

    def forget(self, name: str) -> None:
        """Drop a held task (its prompt and cached keys/values); the folder stays."""
        with self._lock:
            self._drop(name)

    def _drop(self, name: str) -> None:
        self._tasks.pop(name, None)
        self._stamps.pop(name, None)

    def _hold(self, name: str, served: Served, now: Stamp | None) -> None:
        """Keep a task as the most recently used, dropping the least recently used past the capacity."""
        self._drop(name)
        self._tasks[name], self._stamps[name] = served, now
        while len(self._tasks) > self.capacity:
            self._drop(next(iter(self._tasks)))

    def names(self) -> list[str]:
        return sorted(
            folder.name
            for folder in self.root.iterdir()
            if valid_name(folder.name) and (folder / checkpoint.WEIGHTS).is_file()
        )

    def items(self) -> list[tuple[str, Served]]:
        """Every task in the folder; those not held are loaded for the answer and not kept."""
        listed = []
        for name in self.names():
            now = stamp(self.root / name)
            with self._lock:
                held = self._held(name, now)
            if held is None:
                try:
                    held = self._read(name)[1]
                except (OSError, SoftpromptError):  # not a prompt folder
                    continue
            if held is not None:  # None: deleted meanwhile
                listed.append((name, held))
        return listed
