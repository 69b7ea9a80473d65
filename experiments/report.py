"""Collect experiments/run.sh's results into docs/experiments/: the sweep plots and CSVs, and tables.md.

python experiments/report.py [runs/experiments]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from softprompt.toolbox.sweep import read_sweep  # noqa: E402

DOCS = ROOT / "docs" / "experiments"


def sweep_table(name: str, rows: list[dict]) -> str:
    """Accuracy (macro-F1) per initialisation (rows) and prompt length (columns)."""
    lengths = sorted({r["num_virtual_tokens"] for r in rows})
    lines = [f"### {name}", "", "| init \\ prompt tokens | " + " | ".join(map(str, lengths)) + " |",
             "|---|" + "---|" * len(lengths)]  # fmt: skip
    for init in dict.fromkeys(r["init"] for r in rows):
        cells = []
        for n in lengths:
            runs = [r for r in rows if r["init"] == init and r["num_virtual_tokens"] == n]
            cells.append(" / ".join(f"{r['accuracy']:.3f} ({r['macro_f1']:.3f})" for r in runs) or "")
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    results = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "runs" / "experiments")
    DOCS.mkdir(parents=True, exist_ok=True)
    parts = ["# Experiment tables (written by experiments/report.py; accuracy with macro-F1 in brackets)", ""]
    for folder in sorted(results.glob("sweep-*")) + sorted(results.glob("ensemble-*")):
        if not (folder / "sweep.csv").is_file():
            continue
        for suffix in ("csv", "png") if folder.name.startswith("sweep-") else ("csv",):
            if (folder / f"sweep.{suffix}").is_file():
                shutil.copyfile(folder / f"sweep.{suffix}", DOCS / f"{folder.name}.{suffix}")
        parts.append(sweep_table(folder.name, read_sweep(folder / "sweep.csv")))
    for file in sorted(results.glob("ensemble-*/ensemble-*.json")) + sorted(results.glob("transfer-*.json")):
        lines = file.read_text().strip().splitlines()
        if lines:
            result = json.dumps(json.loads(lines[-1]))
            parts += [f"### {file.parent.name}/{file.name}", "", "```json", result, "```", ""]
    if (results / "inspect-sst2.txt").is_file():
        parts += ["### inspect-sst2.txt", "", "```", (results / "inspect-sst2.txt").read_text().rstrip(), "```", ""]
    (DOCS / "tables.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
