"""Prompt ensembling (Lester et al. §6): K prompts for one task over one frozen model, answered together.

Every input row is repeated once per member, each copy under that member's prompt, and all copies go to the
model as one mixed-prompt batch (as the server's requests of many tasks do): on a decoder-only model they
share packed forwards, each copy reading its member's cached prompt keys/values, so K prompts cost one
batched pass, not K passes; an encoder-decoder runs the members one after another.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.batch_map import BatchMap
from ..data.tasks import Row
from ..prompts.evaluate import classification_metrics
from ..prompts.generation import in_blocks
from ..prompts.tuned import TunedPrompt
from ..utils.errors import ParameterError, SoftpromptError

MODES = ("vote", "mean")


def check_members(members: Sequence[TunedPrompt]) -> None:
    if len(members) < 2:
        raise SoftpromptError("an ensemble needs at least 2 prompts")
    first = members[0]
    for member in members[1:]:
        if (member.task.labels, member.task.template, member.task.chat) != (first.task.labels, first.task.template,
                                                                             first.task.chat):
            raise SoftpromptError("ensemble members must share the task's template, labels and chat option")
        if member.lm.model is not first.lm.model:
            raise SoftpromptError("ensemble members must run on the same base model")


@torch.no_grad()
def member_scores(
    members: Sequence[TunedPrompt], rows: Sequence[Row], batch_size: int = 32, progress: bool = False
) -> torch.Tensor:
    """[K, N, L] label log-likelihoods of every member for every row, K members per forward."""
    check_members(members)
    first = members[0]
    parts = []
    for block in in_blocks(rows, max(1, batch_size // len(members)), progress):
        inputs = [first.encoder.input_ids(row) for row in block]
        batch = BatchMap.of([inputs] * len(members), [member.lm for member in members])
        labels = [first.encoder.label_ids] * len(batch.items)
        scores = first.lm.score_rows(batch.items, labels, batch.item_prompts(), batch_size=batch_size)
        parts.append(torch.stack([torch.stack(part) for part in batch.split(scores)]))
    return torch.cat(parts, dim=1)


def combine(scores: torch.Tensor, mode: str = "vote") -> list[int]:
    """Majority vote over members' predictions (ties go to the higher mean probability), or the label with
    the highest mean probability."""
    if mode not in MODES:
        raise ParameterError.not_one_of("mode", mode, MODES)
    probs = scores.softmax(-1).mean(0)  # [N, L]
    if mode == "mean":
        return probs.argmax(-1).tolist()
    votes = torch.nn.functional.one_hot(scores.argmax(-1), scores.shape[-1]).sum(0).float()  # [N, L]
    return (votes + probs * 0.5).argmax(-1).tolist()  # a probability (< 1) only breaks ties between votes


def evaluate_ensemble(
    members: Sequence[TunedPrompt], rows: Sequence[Row], batch_size: int = 32, mode: str = "vote",
    progress: bool = False,
) -> dict:
    """Each member's accuracy/macro-F1 and the ensemble's, from one batched pass."""
    task = members[0].task
    gold = [task.label_index(row) for row in rows]
    scores = member_scores(members, rows, batch_size, progress)
    n_labels = len(task.labels)
    result = {
        "members": [classification_metrics(s.argmax(-1).tolist(), gold, n_labels) for s in scores],
        "ensemble": classification_metrics(combine(scores, mode), gold, n_labels),
        "mode": mode,
        "n": len(rows),
    }
    result["member_mean_accuracy"] = sum(m["accuracy"] for m in result["members"]) / len(members)
    return result
