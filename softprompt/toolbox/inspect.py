"""Interpretability (Lester et al. §7): the vocabulary tokens nearest (by cosine) to each prompt vector."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..prompts.plots import save_figure
from ..prompts.tuned import TunedPrompt


@torch.no_grad()
def nearest_tokens(tuned: TunedPrompt, k: int = 5) -> dict:
    """Per prompt position: its norm and the k nearest tokens; plus how many positions have a label word's
    token among their neighbours (class-label prompts keep label words nearby)."""
    tokenizer = tuned.tokenizer
    table = tuned.lm.model.get_input_embeddings()
    # The vocabulary as the model itself embeds it (Gemma scales its embeddings).
    vocab = table(torch.arange(table.num_embeddings, device=table.weight.device)).float()
    prompt = tuned.lm.prompt.embedding.detach().float()
    similarity = F.normalize(prompt, dim=-1) @ F.normalize(vocab, dim=-1).T
    top = similarity.topk(k, dim=-1)
    label_ids = {
        token: word
        for word in tuned.task.label_words
        for token in tokenizer(word, add_special_tokens=False)["input_ids"]
    }
    positions = []
    for index in range(prompt.shape[0]):
        ids = top.indices[index].tolist()
        positions.append({
            "position": index,
            "norm": float(prompt[index].norm()),
            "nearest": [
                {"token": tokenizer.decode([i]), "id": i, "cosine": float(c)}
                for i, c in zip(ids, top.values[index].tolist())
            ],
            "label_words": sorted({label_ids[i] for i in ids if i in label_ids}),
        })  # fmt: skip
    return {
        "num_virtual_tokens": prompt.shape[0],
        "k": k,
        "positions_near_a_label": sum(bool(p["label_words"]) for p in positions),
        "vocab_mean_norm": float(vocab.norm(dim=-1).mean()),
        "positions": positions,
    }


def as_text(report: dict) -> str:
    lines = [
        f"{report['positions_near_a_label']} of {report['num_virtual_tokens']} positions have a label word among "
        f"their {report['k']} nearest tokens (mean vocabulary norm {report['vocab_mean_norm']:.3f})"
    ]
    for p in report["positions"]:
        near = ", ".join(f"{n['token']!r} {n['cosine']:.2f}" for n in p["nearest"])
        lines.append(f"{p['position']:>4}  norm {p['norm']:7.3f}  {near}")
    return "\n".join(lines)


def heat_map(report: dict, target: Path) -> None:
    """A PNG: rows are prompt positions, columns the k nearest tokens, colour the cosine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [[n["cosine"] for n in p["nearest"]] for p in report["positions"]]
    fig, ax = plt.subplots(figsize=(2 + 1.6 * report["k"], 1 + 0.35 * len(values)))
    image = ax.imshow(values, cmap="viridis", aspect="auto", vmin=0, vmax=1)
    for row, p in enumerate(report["positions"]):
        for col, n in enumerate(p["nearest"]):
            ax.text(col, row, n["token"].strip()[:12] or repr(n["token"]), ha="center", va="center", fontsize=7,
                    color="white" if n["cosine"] < 0.6 else "black")  # fmt: skip
    ax.set(xlabel="k-th nearest token", ylabel="prompt position", title="nearest vocabulary tokens (cosine)")
    fig.colorbar(image, ax=ax)
    save_figure(fig, target)
