"""Rows to generated text: the input ids of each row, batched by length, decoded greedily or by nucleus sampling
with a seed, each row's tokens ended at EOS or a stop string; with a progress bar over the rows.

Classification's `--method generate` and text-to-text evaluation both decode here, so they decode alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from tqdm import tqdm

from ..data.batching import Encoder, chunks, in_length_order
from ..data.tasks import Row
from ..engine.prompted import PromptedModel

BLOCK_BATCHES = 4  # batches scored between two updates of the progress bar


def in_blocks(rows: Sequence[Row], batch_size: int, progress: bool, what: str = "scoring") -> Iterator[Sequence[Row]]:
    """The rows a few batches at a time, with a bar on stderr (rows done of all) when `progress` is on: a
    command scoring a thousand rows on a CPU runs for minutes, and says how far it is."""
    with tqdm(total=len(rows), unit="row", desc=what, disable=not progress, leave=False, dynamic_ncols=True) as bar:
        for block in chunks(rows, batch_size * BLOCK_BATCHES):
            yield block
            bar.update(len(block))


def by_length(encoder: Encoder, rows: Sequence[Row], batch_size: int, run: Callable, device: torch.device) -> list:
    """`run(ids, mask)` over batches (on `device`) of rows of similar length, results in the rows' order."""
    inputs = [encoder.input_ids(row) for row in rows]
    return in_length_order(inputs, batch_size, encoder.tokenizer.pad_token_id, lambda _, ids, mask: run(ids, mask),
                           device=device)  # fmt: skip


@torch.no_grad()
def generate_texts(
    lm: PromptedModel,
    encoder: Encoder,
    rows: Sequence[Row],
    batch_size: int = 32,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> list[str]:
    """Each row's answer: up to the task's `max_new_tokens`, greedy (temperature 0) or sampled from the top-p
    nucleus with `seed` (the same seed, the same texts), ended at EOS or the task's stop strings."""
    generator = torch.Generator(device=lm.device).manual_seed(seed) if temperature > 0 else None
    eos = encoder.tokenizer.eos_token_id

    def run(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        return lm.generate(ids, mask, encoder.max_new_tokens, eos, temperature=temperature, top_p=top_p,
                           generator=generator, stop_ids=encoder.stop_ids)  # fmt: skip

    generated: list[list[int]] = []
    for block in in_blocks(rows, batch_size, progress, "generating"):
        generated += by_length(encoder, block, batch_size, run, lm.device)
    return [encoder.finish(tokens) for tokens in generated]
