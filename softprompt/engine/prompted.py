"""The contract every prompted model keeps, decoder-only (causal.py) or encoder-decoder (seq2seq.py).

A prompted model is a frozen base, a SoftPrompt of the base's width, a scoring mode and, for decoder-only
models, the template head its task's inputs start with. Training, evaluation, ensembles and the server call
only what this class declares: `score_rows` and `generate` over token-id rows, each row under its own prompt
where `prompts` says so (all on one base), and the label loss. Prompts that cannot share a forward (any
two on an encoder-decoder) run one after another, so a mixed batch works on every architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import nn
from transformers import PreTrainedModel

from ..data.batch_map import BatchMap
from ..data.batching import in_length_order, target_batch
from ..models.prompt import SoftPrompt
from .decoding import Observe


@dataclass
class TokenScores:
    """One row's tokens after the first: each one's log-probability given the ones before it, and each
    position's likeliest alternatives {id: log-probability} (empty dicts unless asked for)."""

    logprobs: list[float]
    top: list[dict[int, float]]


class ScoringMode(StrEnum):
    """How a decoder-only model runs its prompt. Every mode gives the same scores up to rounding; an
    encoder-decoder has one way only (its encoder sees prompt and text together) and takes any."""

    REFERENCE = "reference"  # the prompt's embeddings in front of every sequence, as PEFT runs it; no cache
    CACHED = "cached"  # the prompt's keys/values computed once and shared; padded rows, labels in a second pass
    PACKED = "packed"  # rows and labels laid end to end in a few long sequences, the prompt from its kept cache
    PACKED_INLINE = "packed-inline"  # packed, the prompt run at the front of each pack: for a prompt that
    # changes between calls that each fit one forward (a training run's dev evaluations), where a cache
    # would never be reused


class PromptedModel(nn.Module):
    def __init__(
        self,
        model: PreTrainedModel,
        prompt: SoftPrompt,
        mode: ScoringMode | str = ScoringMode.PACKED,
        head: Sequence[int] = (),
    ) -> None:
        super().__init__()
        hidden = model.config.get_text_config().hidden_size
        if prompt.hidden_size != hidden:
            raise ValueError(f"prompt hidden size {prompt.hidden_size} != model hidden size {hidden}")
        self.model = model  # the frozen base model (a transformers PreTrainedModel)
        self.prompt = prompt.to(self.device)  # the same Parameter, moved: an optimizer made on it stays valid
        self.mode = ScoringMode(mode)
        self.head = list(head)  # token ids every input of this prompt's task starts with (its template's head)

    @property
    def device(self) -> torch.device:
        """Where the base runs (its input embeddings' device): every tensor of a forward is made there."""
        return self.model.get_input_embeddings().weight.device

    @property
    def n_prompt(self) -> int:
        return self.prompt.n_tokens

    def _mode(self, mode: ScoringMode | str | None) -> ScoringMode:
        return self.mode if mode is None else ScoringMode(mode)

    # What each architecture supplies.

    def target_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_lengths: torch.Tensor, mode=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, M] log-probabilities of each row's last `target_lengths[i]` tokens, [B, M] mask)."""
        raise NotImplementedError

    def continuation_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, continuations, mode=None
    ) -> list[torch.Tensor]:
        """Summed log-probabilities of each left-padded row's continuations under this prompt."""
        raise NotImplementedError

    def _generate_alone(self, input_ids, attention_mask, max_new_tokens, eos_token_id, mode, sampling) -> list:
        """`generate` for rows that all run under this prompt."""
        raise NotImplementedError

    def token_logprobs(
        self, rows: Sequence[list[int]], prompts: Sequence[PromptedModel] | None = None, *, top: int = 0,
        batch_size: int = 8,
    ) -> list[TokenScores]:  # fmt: skip
        """Each row's tokens scored under its prompt: every token after the first given the ones before it
        (with the `top` likeliest alternatives), what OpenAI's `echo` returns. Only a decoder-only model reads
        its input as text it predicts; an encoder-decoder has no such scores."""
        raise NotImplementedError("an encoder-decoder does not score its input tokens")

    # The contract.

    def score_rows(
        self,
        rows: Sequence[list[int]],
        continuations: Sequence[Sequence[list[int]]],
        prompts: Sequence[PromptedModel] | None = None,
        *,
        batch_size: int = 32,
        mode: ScoringMode | str | None = None,
    ) -> list[torch.Tensor]:
        """Row i's summed continuation log-probabilities (row i: `continuations[i]`, e.g. its task's labels),
        under `prompts[i]`'s prompt (default: this one), in the rows' order."""
        batch = self._batch(rows, prompts)
        if len(batch.prompts) == 1:
            return batch.prompts[0]._score_alone(rows, continuations, batch_size, self._mode(mode))
        return self._score_mixed(batch, continuations, batch_size, self._mode(mode))

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | None,
        *,
        prompts: Sequence[PromptedModel] | None = None,
        mode: ScoringMode | str | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        observe: Observe | None = None,
        stop_ids: Sequence[int] = (),
    ) -> list[list[int]]:
        """Greedy (temperature 0) or sampled continuations of left-padded inputs, row i under `prompts[i]`'s
        prompt (default: this one); each stops at EOS or after a token of `stop_ids`. `observe` sees every step's
        tokens (decoding.Observe)."""
        batch = self._batch(range(input_ids.shape[0]), prompts)
        mode = self._mode(mode)
        sampling = {"temperature": temperature, "top_p": top_p, "generator": generator, "observe": observe,
                    "stop_ids": stop_ids}  # fmt: skip
        if len(batch.prompts) == 1:
            prompt = batch.prompts[0]
            return prompt._generate_alone(input_ids, attention_mask, max_new_tokens, eos_token_id, mode, sampling)
        return self._generate_mixed(batch, input_ids, attention_mask, max_new_tokens, eos_token_id, mode, sampling)

    def target_logprob_sum(
        self, sources: Sequence[list[int]], targets: Sequence[list[int]], mode: ScoringMode | str | None = None
    ) -> torch.Tensor:
        """[B] summed log-probabilities of each row's target after its source (the training loss's terms)."""
        batch = target_batch(sources, targets, pad_id=0, device=self.device)  # pads are masked out
        logprobs, _ = self.target_logprobs(batch.input_ids, batch.attention_mask, batch.target_lengths, mode)
        return logprobs.sum(1)

    def loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood over all target tokens of the batch (as HF's -100 labels give)."""
        logprobs, valid = self.target_logprobs(input_ids, attention_mask, target_lengths)
        return -logprobs.sum() / valid.sum()

    # One prompt at a time: what a mixed batch falls back to where prompts cannot share a forward.

    def _batch(self, rows: Sequence, prompts: Sequence[PromptedModel] | None) -> BatchMap:
        batch = BatchMap.per_item(rows, prompts if prompts is not None else [self] * len(rows))
        if any(prompt.model is not self.model for prompt in batch.prompts):
            raise ValueError("every prompt of a batch must run on this model's base")
        return batch

    def _score_alone(self, rows, continuations, batch_size: int, mode: ScoringMode) -> list[torch.Tensor]:
        """Padded batches of rows of similar length, every row under this prompt."""

        def run(idx: list[int], ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
            return self.continuation_logprobs(ids, mask, [continuations[i] for i in idx], mode=mode)

        return in_length_order(rows, batch_size, 0, run, device=self.device)

    def _score_mixed(self, batch: BatchMap, continuations, batch_size: int, mode: ScoringMode) -> list[torch.Tensor]:
        results: list = [None] * len(batch.items)
        for index, prompt in enumerate(batch.prompts):
            mine = batch.items_of(index)
            scores = prompt._score_alone([batch.items[i] for i in mine], [continuations[i] for i in mine],
                                         batch_size, mode)  # fmt: skip
            for i, score in zip(mine, scores):
                results[i] = score
        return results

    def _generate_mixed(self, batch: BatchMap, input_ids, attention_mask, max_new_tokens, eos, mode, sampling):
        results: list = [None] * len(batch.items)
        observe = sampling["observe"]
        for index, prompt in enumerate(batch.prompts):
            mine = torch.tensor(batch.items_of(index), device=input_ids.device)
            if observe is not None:  # this prompt's rows, told by their place in the whole batch
                sampling = {
                    **sampling,
                    "observe": lambda rows, ids, logprobs, mine=mine: observe(mine[rows], ids, logprobs),
                }
            out = prompt._generate_alone(input_ids[mine], attention_mask[mine], max_new_tokens, eos, mode, sampling)
            for i, tokens in zip(mine.tolist(), out):
                results[i] = tokens
        return results
