"""Figures as PNG: training curves (read back from metrics.jsonl so a resumed run plots its whole history) and
a confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path


def plot_curves(metrics: Path, target: Path) -> None:
    if not metrics.is_file():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_loss", "eval_loss"):
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            loss_ax.plot(*zip(*points), label=key, marker=".")
    for key in ("accuracy", "macro_f1"):
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            score_ax.plot(*zip(*points), label=f"eval {key}", marker=".")
    loss_ax.set(xlabel="step", ylabel="loss (label tokens)", title="loss")
    score_ax.set(xlabel="step", ylabel="score", title="held-out classification", ylim=(0, 1))
    for ax in (loss_ax, score_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    save_figure(fig, target)


def plot_confusion(confusion: dict, target: Path, title: str) -> None:
    """`evaluate`'s confusion matrix as a heat map: gold labels down, predicted across, each cell's count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts, labels, columns = confusion["counts"], confusion["labels"], confusion["columns"]
    fig, ax = plt.subplots(figsize=(1.2 * len(columns) + 2.5, 1.0 * len(labels) + 1.8))
    image = ax.imshow(counts, cmap="Blues")
    top = max(max(row) for row in counts) or 1
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > top / 2 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="gold", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    save_figure(fig, target)


def save_figure(fig, target: Path) -> None:
    """Save as PNG atomically (temp file, then rename) and free the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = target.with_name(f".{target.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(target)
