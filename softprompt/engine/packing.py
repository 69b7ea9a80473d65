"""Packed scoring: many rows, each with its own prompt and several continuations, in one padding-free forward.

Rows are laid end to end in a few long sequences ("packs"). After each row come its continuations minus
their last token (e.g. every label of the task), side by side. A 4D attention mask lets each token see its
own prompt (from the shared cache of every prompt in play), its own row, and, for continuation tokens, only
the earlier tokens of the same continuation; position ids restart for each row. So every (row, continuation)
scores as it would alone, while the matrix multiplies see one large batch with no padding, and the
continuations need no second pass and no copy of the cache. A template head that all of a prompt's rows
start with joins that prompt's cache, so it runs once per call instead of once per row. In training (one
prompt, with gradients), and where asked (`inline`, the packed-inline scoring mode), the prompt and head run
at the front of every pack instead of as a cache. Packing needs only prompt_cache.PromptSource of a prompted
model.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from ..data.batch_map import BatchMap
from .prompt_cache import KV, PromptSource

# Decoder-only families whose attention takes a custom 4D mask and whose positions come from position ids
# alone (ALiBi models such as BLOOM derive positions from the 2D mask, so they keep the padded path).
PACKABLE = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "gemma3", "phi3", "olmo2"}
PACK_TOKENS = 192  # tokens per pack: long enough for efficient matrix multiplies, short enough that the
# dense masked attention (which grows with the square of a pack's length) stays a small share of the work


def packable(config, longest: int = 0) -> bool:
    """Whether this model can score packed rows of up to `longest` tokens (prompt included): our mask
    replaces the model's own, so a sliding-window layer must never need its window."""
    window = getattr(config.get_text_config(), "sliding_window", None)
    return (
        config.model_type in PACKABLE
        and config._attn_implementation in ("sdpa", "eager")
        and (not window or longest <= window)
    )


@dataclass
class Pack:
    """One batch row of the packed forward: token ids, position ids, and who each token belongs to."""

    ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    row: list[int] = field(default_factory=list)  # the input row each token belongs to
    branch: list[int] = field(default_factory=list)  # -1: the row itself; k: its k-th continuation
    targets: list[tuple[int, int, int, int]] = field(default_factory=list)  # (index, token, row, continuation)


def build_packs(
    rows: Sequence[list[int]], continuations: Sequence[Sequence[list[int]]], offsets: Sequence[int], pack_tokens: int
) -> list[Pack]:
    """Lay rows and their continuations into packs; `offsets[i]` is the position row i starts at (its prompt
    length). A row never straddles two packs. The packs are filled evenly, so the forward's padding (up to the
    fullest pack) stays small: longest rows first, each into the emptiest pack."""
    empty = next((index for index, row in enumerate(rows) if not row), None)
    if empty is not None:
        raise ValueError(f"row {empty} is empty: a continuation needs at least one input token")
    sizes = [len(row) + sum(len(cont) - 1 for cont in conts) for row, conts in zip(rows, continuations)]
    capacity = max(pack_tokens, max(sizes, default=0))
    packs = [Pack() for _ in range(math.ceil(sum(sizes) / capacity))]  # every row has a token, so none is empty
    for index in sorted(range(len(rows)), key=sizes.__getitem__, reverse=True):
        row, conts = rows[index], continuations[index]
        pack = min(packs, key=lambda p: len(p.ids))
        start = len(pack.ids)
        pack.ids += row
        pack.positions += range(offsets[index], offsets[index] + len(row))
        pack.row += [index] * len(row)
        pack.branch += [-1] * len(row)
        last = start + len(row) - 1  # predicts every continuation's first token
        for k, cont in enumerate(conts):
            head = len(pack.ids)
            pack.ids += cont[:-1]
            pack.positions += range(offsets[index] + len(row), offsets[index] + len(row) + len(cont) - 1)
            pack.row += [index] * (len(cont) - 1)
            pack.branch += [k] * (len(cont) - 1)
            pack.targets += [(last if j == 0 else head + j - 1, token, index, k) for j, token in enumerate(cont)]
    return packs


def packed_scores(
    lms: Sequence[PromptSource],
    rows: Sequence[list[int]],
    continuations: Sequence[Sequence[list[int]]],
    rows_per_forward: int | None = None,
    pack_tokens: int | None = None,
    inline: bool = False,
) -> list[torch.Tensor]:
    """Summed log-probabilities of each row's continuations, row i under `lms[i]`'s prompt (one base model).

    All rows are packed together (so short rows fill the gaps long ones leave), then run about
    `rows_per_forward` rows' worth of packs per forward (default: all in one). `inline` runs a single
    prompt at the front of every pack instead of from its cached keys/values."""
    batch = BatchMap.per_item(rows, lms)
    unique, owners = batch.prompts, batch.prompt_of
    heads = [_head_of(lm, [rows[i] for i in batch.items_of(o)]) for o, lm in enumerate(unique)]
    training = torch.is_grad_enabled() and unique[0].prompt.embedding.requires_grad
    if len(unique) == 1 and (training or inline):
        # Training one prompt: a separate batch-1 pass for its keys/values (and its backward) costs more in
        # per-operator overhead than running its few tokens again in front of each of the step's few packs.
        slots: KV | torch.Tensor = unique[0].prompt_embeds_with(heads[0])
    else:
        slots = [lm.prompt_kv(head) for lm, head in zip(unique, heads)]
    n_slots = [lm.n_prompt + len(head) for lm, head in zip(unique, heads)]  # prompt + head tokens per prompt
    device = unique[0].prompt.embedding.device
    row_owner = torch.tensor(owners, device=device)
    slot_owner = torch.tensor([i for i, n in enumerate(n_slots) for _ in range(n)], dtype=torch.long, device=device)
    rows = [row[len(heads[o]) :] for row, o in zip(rows, owners)]
    packs = build_packs(rows, continuations, [n_slots[o] for o in owners], pack_tokens or PACK_TOKENS)
    per_forward = len(packs) if not rows_per_forward else max(1, round(len(packs) * rows_per_forward / len(rows)))
    conts = BatchMap.of(continuations)
    starts = [0, *itertools.accumulate(conts.sizes)]
    parts = []
    for group in (packs[i : i + per_forward] for i in range(0, len(packs), per_forward)):
        picked, targets = _forward(unique[0], slots, slot_owner, row_owner, group)
        parts.append((picked, [starts[r] + k for *_, r, k in targets]))
    picked = torch.cat([p for p, _ in parts])
    flat = torch.tensor([i for _, indices in parts for i in indices], device=picked.device)
    totals = torch.zeros(len(conts.items), dtype=picked.dtype, device=picked.device).index_add(0, flat, picked)
    return conts.split(totals)


def _head_of(lm: PromptSource, rows: Sequence[list[int]]) -> list[int]:
    """`lm.head` where every one of its rows starts with it and goes on after it, else nothing: those
    tokens then go with the prompt, computed once per call (or per pack in training), not once per row."""
    head = lm.head
    n = len(head)
    return head if n and all(len(row) > n and row[:n] == head for row in rows) else []


def _forward(first: PromptSource, slots, slot_owner: torch.Tensor, row_owner: torch.Tensor, packs: list[Pack]):
    """One forward over `packs` (a batch row each): the log-probability of every target, and the targets.

    `slots` are the prompts' keys/values per layer, handed to every pack as a cache, or one prompt's input
    embeddings [1, S, d], run at the front of every pack in the same forward."""
    width = max(len(p.ids) for p in packs)
    device = first.prompt.embedding.device

    def padded(part: str, pad: int) -> torch.Tensor:  # one copy to the device per field, not one per pack
        rows = [getattr(p, part) + [pad] * (width - len(p.ids)) for p in packs]
        return torch.tensor(rows, dtype=torch.long, device=device)

    ids, positions, branch = padded("ids", 0), padded("positions", 0), padded("branch", 0)
    row = padded("row", -1)  # padding belongs to no row
    query_owner = row_owner[row.clamp(min=0)]
    sees_prompt = (query_owner[:, :, None] == slot_owner[None, None]) & (row[:, :, None] >= 0)
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    same_row = row[:, :, None] == row[:, None, :]
    same_branch = (branch[:, None, :] == -1) | (branch[:, None, :] == branch[:, :, None])
    sees_text = causal & same_row & same_branch  # padding sees itself only, so no query row is empty
    allowed = torch.cat([sees_prompt, sees_text], dim=2)
    if isinstance(slots, torch.Tensor):
        n_front = slots.shape[1]
        front = torch.ones(n_front, n_front, dtype=torch.bool, device=device).tril()  # prompt tokens see each other
        hidden_text = torch.zeros(n_front, width, dtype=torch.bool, device=device)
        front = torch.cat([front, hidden_text], dim=1).expand(len(packs), -1, -1)
        allowed = torch.cat([front, allowed], dim=1)
        positions = torch.cat([torch.arange(n_front, device=device).expand(len(packs), -1), positions], dim=1)
        embeds = first.model.get_input_embeddings()(ids)
        inputs = {"inputs_embeds": torch.cat([slots.expand(len(packs), -1, -1), embeds], dim=1), "use_cache": False}
    else:
        n_front = 0
        layers = [
            tuple(torch.cat([kv[layer][part] for kv in slots], dim=2).expand(len(packs), -1, -1, -1) for part in (0, 1))
            for layer in range(len(slots[0]))
        ]
        cache = DynamicCache(layers, config=first.model.config)
        inputs = {"input_ids": ids, "cache": cache, "use_cache": True}
    allowed = allowed.unsqueeze(1)
    dtype = first.model.get_input_embeddings().weight.dtype
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    out = first.model.base_model(attention_mask=mask, position_ids=positions, **inputs)
    hidden = out.last_hidden_state[:, n_front:]
    targets = [(b, *t) for b, pack in enumerate(packs) for t in pack.targets]
    at = torch.tensor([(b, i) for b, i, *_ in targets], device=device)
    logprobs = F.log_softmax(first.logits(hidden[at[:, 0], at[:, 1]]), dim=-1)
    picked = logprobs.gather(1, torch.tensor([t[2] for t in targets], device=device)[:, None]).squeeze(1)
    return picked, targets
