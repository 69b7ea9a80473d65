"""docs/evaluation.md's table from experiments/harness.sh's output folder: each prompt's score by `softprompt
eval` and by each way lm-evaluation-harness ran it (accuracy, or exact match for SQuAD), on the same rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

WAYS = {"completions": "local-completions", "chat": "local-chat-completions", "hf": "hf + peft"}
PROMPTS = {"tweets": "accuracy", "tweets-chat": "accuracy", "squad": "exact_match"}


def harness_score(out: Path, way: str, name: str) -> str:
    """The harness's figure (acc, with acc_norm; or exact_match) for one run, or a dash where it did not run."""
    found = sorted((out / "lm_eval" / f"{way}-{name}").rglob("results_*.json"))
    if not found:
        return "—"
    result = json.loads(found[-1].read_text())["results"][name.replace("-", "_")]
    if "acc,none" in result:
        return f"{result['acc,none']:.3f} (acc_norm {result['acc_norm,none']:.3f})"
    return f"{result['exact_match,none']:.3f}"


def table(out: Path) -> str:
    lines = ["| prompt | rows | softprompt eval | " + " | ".join(WAYS.values()) + " |", "|---" * (3 + len(WAYS)) + "|"]
    for name, metric in PROMPTS.items():
        ours = json.loads((out / f"{name}.eval.json").read_text())
        figure = f"{ours[metric]:.3f}" + (f" (F1 {ours['f1']:.3f})" if metric == "exact_match" else "")
        cells = [harness_score(out, way, name) for way in WAYS]
        lines.append(f"| {name} ({metric}) | {ours['n']} | {figure} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1])))
