"""PromptedCausalLM: the one place that knows how a soft prompt enters a decoder-only model.

The prompt enters in embedding space in front of the text. With a causal mask the prompt's hidden states
never see the text, so outside the reference mode its keys/values are computed once per prompt
(prompt_cache.py) and handed to the batch as a cache; gradients reach the prompt through that cache. The
reference mode concatenates embeddings exactly as PEFT does, and is what the faster modes are tested
against. Scoring packs rows end to end where the model allows it (packing.py).

Inputs are left-padded. Position ids count real tokens only, so pads between prompt and text change
nothing, and the LM head runs only at the positions a caller asks for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from ..data.batch_map import BatchMap
from ..data.batching import in_length_order, pad_right
from .decoding import decode
from .packing import packable, packed_scores
from .prompt_cache import KV, PromptKV, empty_kv, expanded_cache, mixed_prompt_cache
from .prompted import PromptedModel, ScoringMode, TokenScores

PACKED_MODES = (ScoringMode.PACKED, ScoringMode.PACKED_INLINE)
LOGIT_SLICE = 256  # positions whose logits `token_logprobs` holds at once


class PromptedCausalLM(PromptedModel):
    """A frozen causal LM with a trainable SoftPrompt in front of every input."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prompt_cache = PromptKV()

    def _prompt_embeds(self, batch: int) -> torch.Tensor:
        dtype = self.model.get_input_embeddings().weight.dtype
        return self.prompt().to(dtype).unsqueeze(0).expand(batch, -1, -1)

    def prompt_embeds_with(self, ids: Sequence[int] = ()) -> torch.Tensor:
        """[1, N + len(ids), d]: the prompt, then the embeddings of the token `ids`, in the base's dtype."""
        embeds = self._prompt_embeds(1)
        if not ids:
            return embeds
        tokens = torch.tensor([list(ids)], device=embeds.device)
        return torch.cat([embeds, self.model.get_input_embeddings()(tokens)], dim=1)

    def prompt_kv(self, head: Sequence[int] = ()) -> KV:
        """The keys/values of the prompt, then of the template `head`'s token ids if given, per layer, batch
        size 1; kept (outside autograd) until the prompt changes."""

        def compute() -> KV:
            embeds = self.prompt_embeds_with(head)
            if not embeds.shape[1]:
                return empty_kv(self.model.config, embeds)
            out = self.model.base_model(inputs_embeds=embeds, use_cache=True)
            return [(layer.keys, layer.values) for layer in out.cache.layers]

        return self.prompt_cache.get(self.prompt.embedding, head, compute)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cache: DynamicCache | None = None,
        with_prompt: bool = False,
        mode: ScoringMode | str | None = None,
    ) -> tuple[torch.Tensor, DynamicCache | None]:
        """Final hidden states of the text positions [B, T, d] with the prompt in front.

        Returns the cache (prompt + text) outside the reference mode, for generation and label scoring.
        `with_prompt` (reference mode) also returns the prompt positions, [B, N + T, d], as PEFT does.
        """
        batch, _ = input_ids.shape
        embeds = self.model.get_input_embeddings()(input_ids)
        if cache is None and self._mode(mode) is ScoringMode.REFERENCE:
            full_mask = torch.cat([attention_mask.new_ones(batch, self.n_prompt), attention_mask], dim=1)
            out = self.model.base_model(
                inputs_embeds=torch.cat([self._prompt_embeds(batch), embeds], dim=1),
                attention_mask=full_mask,
                position_ids=_positions(full_mask, 0),
            )
            return out.last_hidden_state[:, 0 if with_prompt else self.n_prompt :], None
        if cache is None:
            cache = expanded_cache(self.prompt_kv(), batch, self.model.config)
            past_mask = attention_mask.new_ones(batch, self.n_prompt)
        else:
            past_mask = cache.attention_mask
        full_mask = torch.cat([past_mask, attention_mask], dim=1)
        start = past_mask.sum(1, keepdim=True)
        out = self.model.base_model(
            inputs_embeds=embeds,
            attention_mask=full_mask,
            position_ids=start + _positions(attention_mask, 0),
            cache=cache,
            use_cache=True,
        )
        cache.attention_mask = full_mask
        return out.last_hidden_state, cache

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head on the given hidden states only, in float32."""
        logits = self.model.get_output_embeddings()(hidden).float()
        cap = getattr(self.model.config.get_text_config(), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def target_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_lengths: torch.Tensor, mode=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of each row's last `target_lengths[i]` tokens, given everything before.

        Returns ([B, M] log-probs, [B, M] mask) with M = the longest target; the head runs only there.
        """
        hidden, _ = self.hidden_states(input_ids, attention_mask, mode=mode)
        length = input_ids.shape[1]
        width = int(target_lengths.max())
        offsets = torch.arange(width, device=input_ids.device)
        # Target token j of row i sits at length - t_i + j; it is predicted from the position before.
        target_pos = (length - target_lengths).unsqueeze(1) + offsets
        valid = offsets.unsqueeze(0) < target_lengths.unsqueeze(1)
        target_pos = torch.where(valid, target_pos, length - 1)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device).unsqueeze(1)
        logprobs = F.log_softmax(self.logits(hidden[rows, target_pos - 1]), dim=-1)
        picked = logprobs.gather(-1, input_ids[rows, target_pos].unsqueeze(-1)).squeeze(-1)
        return picked * valid, valid

    def continuation_logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        continuations: Sequence[Sequence[list[int]]],
        mode: ScoringMode | str | None = None,
        cache: DynamicCache | None = None,
    ) -> list[torch.Tensor]:
        """Summed log-probabilities of each row's continuations (row i: `continuations[i]`, e.g. its labels).

        Outside the reference mode the inputs run once; the cache rows are then repeated once per
        continuation, so the work grows with the label tokens, not with labels x input length. `cache`
        (a mixed-prompt cache) lets each row carry another task's prompt."""
        if cache is None and self._mode(mode) is ScoringMode.REFERENCE:
            return self._continuation_logprobs_reference(input_ids, attention_mask, continuations)
        hidden, cache = self.hidden_states(input_ids, attention_mask, cache, mode=ScoringMode.CACHED)
        conts = BatchMap.of(continuations)
        owners = torch.tensor(conts.owner, dtype=torch.long, device=input_ids.device)
        cont_ids, cont_mask = pad_right(conts.items, device=input_ids.device)
        first = F.log_softmax(self.logits(hidden[:, -1]), dim=-1)[owners]
        scores = first.gather(1, cont_ids[:, :1]).squeeze(1)
        if cont_ids.shape[1] > 1:
            cache.batch_select_indices(owners)
            cache.attention_mask = cache.attention_mask[owners]
            hidden, _ = self.hidden_states(cont_ids[:, :-1], cont_mask[:, :-1], cache)
            logprobs = F.log_softmax(self.logits(hidden), dim=-1)
            picked = logprobs.gather(-1, cont_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            scores = scores + (picked * cont_mask[:, 1:]).sum(1)
        return conts.split(scores)

    def _continuation_logprobs_reference(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, continuations: Sequence[Sequence[list[int]]]
    ) -> list[torch.Tensor]:
        """One full sequence per (row, continuation)."""
        lengths = attention_mask.sum(1).tolist()
        rows = [ids[len(ids) - n :] for ids, n in zip(input_ids.tolist(), lengths)]
        pairs = BatchMap.of(continuations)
        sources = [rows[owner] for owner in pairs.owner]
        logprobs = self.target_logprob_sum(sources, pairs.items, mode=ScoringMode.REFERENCE)
        return pairs.split(logprobs)

    def target_logprob_sum(self, sources, targets, mode: ScoringMode | str | None = None) -> torch.Tensor:
        """As PromptedModel.target_logprob_sum; packed (no padding) in a packed mode where the model allows it."""
        continuations = [[target] for target in targets]
        if self._mode(mode) in PACKED_MODES and self._packs(sources, continuations, [self] * len(sources)):
            return torch.cat(packed_scores([self] * len(sources), sources, continuations))
        return super().target_logprob_sum(sources, targets, mode)

    def _score_alone(self, rows, continuations, batch_size: int, mode: ScoringMode) -> list[torch.Tensor]:
        if mode in PACKED_MODES and self._packs(rows, continuations, [self] * len(rows)):
            inline = mode is ScoringMode.PACKED_INLINE
            return packed_scores([self] * len(rows), rows, continuations, batch_size, inline=inline)
        return super()._score_alone(rows, continuations, batch_size, mode)

    def _score_mixed(self, batch: BatchMap, continuations, batch_size: int, mode: ScoringMode) -> list[torch.Tensor]:
        """Rows of several prompts share one forward: packed, or padded with a mixed-prompt cache."""
        prompts = batch.item_prompts()
        if mode in PACKED_MODES and self._packs(batch.items, continuations, prompts):
            return packed_scores(prompts, batch.items, continuations, batch_size)
        if mode is ScoringMode.REFERENCE:
            return super()._score_mixed(batch, continuations, batch_size, mode)

        def run(idx: list[int], ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
            cache = mixed_prompt_cache(batch.prompts, [batch.prompt_of[i] for i in idx])
            return self.continuation_logprobs(ids, mask, [continuations[i] for i in idx], cache=cache)

        return in_length_order(batch.items, batch_size, 0, run, device=self.device)

    def _packs(self, rows, continuations, prompts: Sequence[PromptedCausalLM]) -> bool:
        """Whether these rows (row i under `prompts[i]`) can be packed on this model."""
        sizes = (p.n_prompt + len(row) + max(map(len, conts)) for row, conts, p in zip(rows, continuations, prompts))
        return packable(self.model.config, max(sizes, default=0))

    def token_logprobs(self, rows, prompts=None, *, top: int = 0, batch_size: int = 8) -> list[TokenScores]:
        """As PromptedModel.token_logprobs: padded batches of similar length, each row under its own prompt's
        kept keys/values (a mixed-prompt cache), the LM head run a slice of positions at a time."""
        batch = self._batch(rows, prompts)

        def run(idx: list[int], ids: torch.Tensor, mask: torch.Tensor) -> list[TokenScores]:
            cache = mixed_prompt_cache(batch.prompts, [batch.prompt_of[i] for i in idx])
            hidden, _ = self.hidden_states(ids, mask, cache)
            return [self._scored(hidden[k, -len(rows[i]) :], ids[k, -len(rows[i]) :], top) for k, i in enumerate(idx)]

        return in_length_order(batch.items, batch_size, 0, run, device=self.device)

    def _scored(self, hidden: torch.Tensor, ids: torch.Tensor, top: int) -> TokenScores:
        scores = TokenScores([], [])
        for start in range(0, len(ids) - 1, LOGIT_SLICE):  # [slice, vocabulary] floats at a time, not [T, vocabulary]
            end = min(start + LOGIT_SLICE, len(ids) - 1)  # position p predicts token p + 1
            logprobs = F.log_softmax(self.logits(hidden[start:end]), -1)
            targets = ids[start + 1 : end + 1]
            scores.logprobs += logprobs.gather(1, targets[:, None]).squeeze(1).tolist()
            if top:
                values, alternatives = logprobs.topk(top)
                scores.top += [dict(zip(a, v)) for a, v in zip(alternatives.tolist(), values.tolist())]
            else:
                scores.top += [{} for _ in targets]
        return scores

    def _generate_alone(self, input_ids, attention_mask, max_new_tokens, eos_token_id, mode, sampling) -> list:
        cache = None if mode is ScoringMode.REFERENCE else expanded_cache(self.prompt_kv(), len(input_ids),
                                                                        self.model.config)  # fmt: skip
        if cache is not None:
            cache.attention_mask = attention_mask.new_ones(len(input_ids), self.n_prompt)
        return self._decode(input_ids, attention_mask, cache, max_new_tokens, eos_token_id, sampling)

    def _generate_mixed(self, batch: BatchMap, input_ids, attention_mask, max_new_tokens, eos, mode, sampling):
        if mode is ScoringMode.REFERENCE:
            return super()._generate_mixed(batch, input_ids, attention_mask, max_new_tokens, eos, mode, sampling)
        cache = mixed_prompt_cache(batch.prompts, batch.prompt_of)
        return self._decode(input_ids, attention_mask, cache, max_new_tokens, eos, sampling)

    def _decode(self, input_ids, attention_mask, cache, max_new_tokens, eos_token_id, sampling) -> list[list[int]]:
        """Decode with `cache` holding each row's prompt (each step then feeds one token), or, without one,
        recompute the whole sequence with the prompt in front at every step (the reference)."""
        batch = input_ids.shape[0]
        new: list[torch.Tensor] = []

        def step(last: torch.Tensor | None) -> torch.Tensor:
            nonlocal cache
            if cache is not None:
                ids, mask = (input_ids, attention_mask) if last is None else (last[:, None], last.new_ones(batch, 1))
                hidden, cache = self.hidden_states(ids, mask, cache)
            else:
                new.extend([] if last is None else [last[:, None]])
                full_ids = torch.cat([input_ids, *new], dim=1)
                full_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, len(new))], dim=1)
                hidden, _ = self.hidden_states(full_ids, full_mask, mode=ScoringMode.REFERENCE)
            return self.logits(hidden[:, -1])

        return decode(step, batch, max_new_tokens, eos_token_id, **sampling)


def _positions(mask: torch.Tensor, start: int) -> torch.Tensor:
    """Position ids that count real tokens only (pads get the position of the next real token)."""
    return (start + mask.long().cumsum(1) - 1).clamp(min=start)
