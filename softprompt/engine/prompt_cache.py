"""A decoder-only prompt's keys/values: computed once, kept while the prompt stays the same, shared by rows.

With a causal mask the prompt never sees the text after it, so its keys/values are the same for every row:
they are computed once (batch size 1) and handed to the batch as a cache. `PromptKV` keeps them per template
head (the tokens all rows of a task start with) until the prompt tensor changes. `mixed_prompt_cache` gives
each row of one batch its own task's prompt. Packing (packing.py) needs only the small `PromptSource`
protocol below, not a prompted model's internals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from transformers import DynamicCache, PreTrainedModel

from ..models.prompt import SoftPrompt

KV = list[tuple[torch.Tensor, torch.Tensor]]  # (keys, values) per layer, [batch, heads, tokens, head_dim]


class PromptSource(Protocol):
    """What packing and the caches need of a prompted decoder-only model."""

    model: PreTrainedModel
    prompt: SoftPrompt
    head: list[int]  # token ids every input of its task starts with (the template's head), or none

    @property
    def n_prompt(self) -> int: ...

    def prompt_embeds_with(self, ids: Sequence[int] = ()) -> torch.Tensor: ...

    def prompt_kv(self, head: Sequence[int] = ()) -> KV: ...

    def logits(self, hidden: torch.Tensor) -> torch.Tensor: ...


class PromptKV:
    """Keys/values of one prompt (plus a template head), kept while the prompt tensor is unchanged.

    The key includes the tensor's version counter, which an optimizer step or `load_state_dict` bumps, so a
    changed prompt is never served from a stale cache. Under autograd nothing is kept: gradients must reach
    the prompt through a fresh computation."""

    def __init__(self) -> None:
        self._version: tuple | None = None
        self._kvs: dict[tuple[int, ...], KV] = {}
        self.hits = 0  # calls answered from kept keys/values (a serving metric)

    def heads(self) -> set[tuple[int, ...]]:
        """The template heads whose keys/values are kept now."""
        return set(self._kvs)

    def get(self, prompt: torch.Tensor, head: Sequence[int], compute: Callable[[], KV]) -> KV:
        if torch.is_grad_enabled() and prompt.requires_grad:
            return compute()
        version, head = (id(prompt), prompt._version, prompt.data_ptr()), tuple(head)
        if self._version != version:
            self._version, self._kvs = version, {}
        if head in self._kvs:
            self.hits += 1
        else:
            self._kvs[head] = compute()
        return self._kvs[head]


def empty_kv(config, like: torch.Tensor) -> KV:
    """Keys/values of no tokens (a prompt of none, e.g. prompt design with no examples): no forward can
    compute them, so they are made to the shapes the layers' own would have."""
    text = config.get_text_config()
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    empty = like.new_zeros(1, heads, 0, head_dim)
    return [(empty, empty) for _ in range(text.num_hidden_layers)]


def expanded_cache(kv: KV, batch: int, config) -> DynamicCache:
    """A fresh cache holding `kv` broadcast to `batch` rows (the model appends to it in place)."""
    return DynamicCache([(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in kv], config=config)


def mixed_prompt_cache(prompts: Sequence[PromptSource], prompt_of: Sequence[int]) -> DynamicCache:
    """A cache whose row i holds `prompts[prompt_of[i]]`'s keys/values (all on one base model).

    Shorter prompts are left-padded with masked slots; each prompt keeps the positions it was computed at,
    and the text after it continues from its real length, so a row scores as it would alone."""
    kvs = [p.prompt_kv() for p in prompts]
    device = kvs[0][0][0].device
    rows = torch.tensor(list(prompt_of), device=device)
    longest = max(p.n_prompt for p in prompts)
    layers = []
    for layer in range(len(kvs[0])):
        keys, values = (
            torch.cat([F.pad(kv[layer][part], (0, 0, longest - kv[layer][part].shape[2], 0)) for kv in kvs])[rows]
            for part in (0, 1)
        )
        layers.append((keys, values))
    cache = DynamicCache(layers, config=prompts[0].model.config)
    slots = torch.arange(longest, device=device)
    masks = torch.stack([(slots >= longest - p.n_prompt).long() for p in prompts])
    cache.attention_mask = masks[rows]
    return cache
