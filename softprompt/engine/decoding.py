"""Token-by-token decoding shared by both architectures: the loop, greedy or nucleus sampling, stop at EOS.

Each prompted model supplies one `step` function (its own way to get the next token's logits, with or
without a cache); everything about choosing tokens and stopping lives here, so both decode alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

# `step(last)` -> [B, V] logits for the next token; `last` is None on the first call, then the [B] ids just
# chosen.
Step = Callable[[torch.Tensor | None], torch.Tensor]
# `observe(rows, ids, logprobs)` after each step: the [n] batch rows still decoding, the ids just chosen for them
# and their [n, V] log-probabilities (the model's, before temperature or top-p): what a server streams, or
# reports as logprobs, token by token.
Observe = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


def decode(
    step: Step,
    batch: int,
    max_new_tokens: int,
    eos_token_id: int | None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    observe: Observe | None = None,
    stop_ids: Sequence[int] = (),
) -> list[list[int]]:
    """Up to `max_new_tokens` new tokens per row, each row cut at its EOS (left out) or after its first token of
    `stop_ids` (kept: its text holds a stop string, which the caller cuts at); stops once every row has ended."""
    chosen: list[torch.Tensor] = []
    done: torch.Tensor | None = None
    last = None
    ends = None  # EOS and the stop tokens, made on the logits' device
    for _ in range(max_new_tokens):
        logits = step(last)
        if ends is None and eos_token_id is not None:
            ends = torch.tensor([eos_token_id, *stop_ids], device=logits.device)
        next_ids = pick(logits, temperature, top_p, generator)
        if observe is not None:
            live = torch.arange(batch, device=logits.device) if done is None else (~done).nonzero().squeeze(1)
            observe(live, next_ids[live], F.log_softmax(logits[live].float(), dim=-1))
        if ends is not None:
            done = torch.zeros_like(next_ids, dtype=torch.bool) if done is None else done
            next_ids = torch.where(done, eos_token_id, next_ids)
            done |= torch.isin(next_ids, ends)
        chosen.append(next_ids)
        last = next_ids
        if done is not None and done.all():
            break
    rows = torch.stack(chosen, dim=1).tolist() if chosen else [[] for _ in range(batch)]
    return [until_end(row, eos_token_id, set(stop_ids)) for row in rows]


def pick(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Greedy below a tiny temperature, else a sample from the top-p nucleus of the tempered distribution."""
    if temperature < 1e-5:  # greedy; a float32 division by a tinier temperature would give 0/0
        return logits.argmax(-1)
    probs = F.softmax((logits - logits.amax(-1, keepdim=True)) / temperature, dim=-1)  # no inf - inf at tiny T
    if top_p < 1.0:
        sorted_probs, order = probs.sort(-1, descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
        keep[..., 0] = True  # the most likely token always stays, whatever top_p rounds to
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def until_end(row: list[int], eos_token_id: int | None, stop_ids: set[int] = frozenset()) -> list[int]:
    """The row up to its EOS, or up to and with its first stop token, whichever comes first."""
    for index, token in enumerate(row):
        if token == eos_token_id:
            return row[:index]
        if token in stop_ids:
            return row[: index + 1]
    return row
