"""PromptedLM: the one place that knows how a soft prompt enters a decoder-only model.

The prompt enters in embedding space in front of the text. With a causal mask the prompt's hidden
states never see the text, so by default we run the prompt through the model once (batch size 1) and
hand its keys/values to the batch as a cache; gradients reach the prompt through that cache. The
plain path (`share_prompt_cache=False`) concatenates embeddings exactly as PEFT does, and serves as
the reference the fast path is tested against.

Inputs are left-padded. Position ids count real tokens only, so pads between prompt and text change
nothing, and the LM head runs only at the positions a caller asks for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, PreTrainedModel

from .batching import in_length_order, pad_right, target_batch
from .packing import packable, packed_scores
from .prompt import SoftPrompt

KV = list[tuple[torch.Tensor, torch.Tensor]]


class PromptedModel(nn.Module):
    """What every prompted model shares: a frozen base, a SoftPrompt of matching width, the label loss."""

    def __init__(self, base: PreTrainedModel, prompt: SoftPrompt) -> None:
        super().__init__()
        hidden = base.config.get_text_config().hidden_size
        if prompt.hidden_size != hidden:
            raise ValueError(f"prompt hidden size {prompt.hidden_size} != model hidden size {hidden}")
        self.base = base
        self.prompt = prompt
        self.prompt_in_forward = False  # see PromptedLM; nothing reads it on other architectures
        self.kv_hits = 0  # inference calls answered from a kept prompt cache (a serving metric)

    @property
    def n_prompt(self) -> int:
        return self.prompt.n_tokens

    def target_logprobs(self, input_ids, attention_mask, target_lengths) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def score_rows(
        self, rows: Sequence[list[int]], continuations: Sequence[Sequence[list[int]]], batch_size: int = 32
    ) -> list[torch.Tensor]:
        """Each row's summed continuation log-probabilities (row i: `continuations[i]`), in the rows' order,
        over batches of rows of similar length."""

        def run(idx: list[int], ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
            return self.continuation_logprobs(ids, mask, [continuations[i] for i in idx])

        return in_length_order(rows, batch_size, 0, run)

    def target_logprob_sum(self, sources: Sequence[list[int]], targets: Sequence[list[int]]) -> torch.Tensor:
        """[B] summed log-probabilities of each row's target after its source (the training loss's terms)."""
        batch = target_batch(sources, targets, pad_id=0)  # pads are masked out
        logprobs, _ = self.target_logprobs(batch.input_ids, batch.attention_mask, batch.target_lengths)
        return logprobs.sum(1)

    def loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood over all target tokens of the batch (as HF's -100 labels give)."""
        logprobs, valid = self.target_logprobs(input_ids, attention_mask, target_lengths)
        return -logprobs.sum() / valid.sum()


class PromptedLM(PromptedModel):
    """A frozen causal LM with a trainable SoftPrompt in front of every input."""

    def __init__(
        self,
        base: PreTrainedModel,
        prompt: SoftPrompt,
        share_prompt_cache: bool = True,
        prompt_in_forward: bool = False,
    ) -> None:
        super().__init__(base, prompt)
        self.share_prompt_cache = share_prompt_cache
        # Packed scoring of this prompt alone runs the prompt (and template head) at the front of every forward
        # instead of from its keys/values computed apart and cached: for a prompt that changes between calls
        # that each fit one forward (a training run's dev evaluations), and the reference the cache is checked
        # against (bench/classify.py). Same scores up to rounding.
        self.prompt_in_forward = prompt_in_forward
        # Token ids every input of this prompt's task starts with (its template's head, set by TunedPrompt):
        # packed scoring computes their keys/values once with the prompt's instead of once per row.
        self.fixed_prefix: list[int] = []
        self._kv_version: tuple | None = None
        self._kvs: dict[tuple[int, ...], KV] = {}

    def _prompt_embeds(self, batch: int) -> torch.Tensor:
        dtype = self.base.get_input_embeddings().weight.dtype
        return self.prompt().to(dtype).unsqueeze(0).expand(batch, -1, -1)

    def prompt_embeds_with(self, prefix: Sequence[int] = ()) -> torch.Tensor:
        """[1, N + len(prefix), d]: the prompt, then the embeddings of the `prefix` token ids, in the base's dtype."""
        embeds = self._prompt_embeds(1)
        if not prefix:
            return embeds
        ids = torch.tensor([list(prefix)], device=embeds.device)
        return torch.cat([embeds, self.base.get_input_embeddings()(ids)], dim=1)

    def prompt_kv(self, prefix: Sequence[int] = ()) -> KV:
        """The keys/values of the prompt, then of the `prefix` token ids if given, per layer, batch size 1.

        Outside autograd they are kept until the prompt tensor changes: an optimizer step or a
        `load_state_dict` bumps the tensor's version counter, which is part of the key, so a
        changed prompt is never served from a stale cache.
        """
        param = self.prompt.embedding
        version, prefix = (id(param), param._version, param.data_ptr()), tuple(prefix)
        grad = torch.is_grad_enabled() and param.requires_grad
        if not grad:
            if self._kv_version != version:
                self._kv_version, self._kvs = version, {}
            if prefix in self._kvs:
                self.kv_hits += 1
                return self._kvs[prefix]
        out = self.base.base_model(inputs_embeds=self.prompt_embeds_with(prefix), use_cache=True)
        kv = [(layer.keys, layer.values) for layer in out.cache.layers]
        if not grad:
            self._kvs[prefix] = kv
        return kv

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cache: DynamicCache | None = None,
        with_prompt: bool = False,
    ) -> tuple[torch.Tensor, DynamicCache | None]:
        """Final hidden states of the text positions [B, T, d] with the prompt in front.

        Returns the cache (prompt + text) on the shared path, for generation and label scoring.
        `with_prompt` (plain path only) also returns the prompt positions, [B, N + T, d], as PEFT does.
        """
        batch, _ = input_ids.shape
        embeds = self.base.get_input_embeddings()(input_ids)
        if cache is None and not self.share_prompt_cache:
            full_mask = torch.cat([attention_mask.new_ones(batch, self.n_prompt), attention_mask], dim=1)
            out = self.base.base_model(
                inputs_embeds=torch.cat([self._prompt_embeds(batch), embeds], dim=1),
                attention_mask=full_mask,
                position_ids=_positions(full_mask, 0),
            )
            return out.last_hidden_state[:, 0 if with_prompt else self.n_prompt :], None
        if cache is None:
            cache = self.expanded_cache(self.prompt_kv(), batch)
            past_mask = attention_mask.new_ones(batch, self.n_prompt)
        else:
            past_mask = cache.attention_mask
        full_mask = torch.cat([past_mask, attention_mask], dim=1)
        start = past_mask.sum(1, keepdim=True)
        out = self.base.base_model(
            inputs_embeds=embeds,
            attention_mask=full_mask,
            position_ids=start + _positions(attention_mask, 0),
            cache=cache,
            use_cache=True,
        )
        cache.attention_mask = full_mask
        return out.last_hidden_state, cache

    def expanded_cache(self, kv: KV, batch: int) -> DynamicCache:
        """A fresh cache holding `kv` broadcast to `batch` rows (the model appends to it in place)."""
        data = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in kv]
        return DynamicCache(data, config=self.base.config)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head on the given hidden states only, in float32."""
        logits = self.base.get_output_embeddings()(hidden).float()
        cap = getattr(self.base.config.get_text_config(), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def target_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of each row's last `target_lengths[i]` tokens, given everything before.

        Returns ([B, M] log-probs, [B, M] mask) with M = the longest target; the head runs only there.
        """
        hidden, _ = self.hidden_states(input_ids, attention_mask)
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
        cache: DynamicCache | None = None,
    ) -> list[torch.Tensor]:
        """Summed log-probabilities of each row's continuations (row i: `continuations[i]`, e.g. its labels).

        On the shared path the inputs run once; the cache rows are then repeated once per continuation,
        so the work grows with the label tokens, not with labels x input length. `cache` (from
        `mixed_prompt_cache`) lets each row carry another task's prompt.
        """
        if cache is None and not self.share_prompt_cache:
            return self._continuation_logprobs_plain(input_ids, attention_mask, continuations)
        hidden, cache = self.hidden_states(input_ids, attention_mask, cache)
        owners = torch.tensor([row for row, conts in enumerate(continuations) for _ in conts])
        flat = [cont for conts in continuations for cont in conts]
        cont_ids, cont_mask = (t.to(input_ids.device) for t in pad_right(flat))
        first = F.log_softmax(self.logits(hidden[:, -1]), dim=-1)[owners]
        scores = first.gather(1, cont_ids[:, :1]).squeeze(1)
        if cont_ids.shape[1] > 1:
            cache.batch_select_indices(owners)
            cache.attention_mask = cache.attention_mask[owners]
            hidden, _ = self.hidden_states(cont_ids[:, :-1], cont_mask[:, :-1], cache)
            logprobs = F.log_softmax(self.logits(hidden), dim=-1)
            picked = logprobs.gather(-1, cont_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            scores = scores + (picked * cont_mask[:, 1:]).sum(1)
        return list(scores.split([len(conts) for conts in continuations]))

    def score_rows(
        self,
        rows: Sequence[list[int]],
        continuations: Sequence[Sequence[list[int]]],
        batch_size: int = 32,
        prompts: Sequence[PromptedLM] | None = None,
    ) -> list[torch.Tensor]:
        """As PromptedModel.score_rows, row i under `prompts[i]`'s prompt (default: this one; all on this base).

        Where the model allows it, rows go into padding-free packed forwards of about `batch_size` rows that
        also score every continuation (packing.py); otherwise the padded two-stage path below runs."""
        prompts = list(prompts or [self] * len(rows))
        if self._packs(rows, continuations, prompts):
            return packed_scores(prompts, rows, continuations, rows_per_forward=batch_size)
        if all(lm is self for lm in prompts):
            return super().score_rows(rows, continuations, batch_size)

        def run(idx: list[int], ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
            cache = mixed_prompt_cache([prompts[i] for i in idx])
            return self.continuation_logprobs(ids, mask, [continuations[i] for i in idx], cache)

        return in_length_order(rows, batch_size, 0, run)

    def target_logprob_sum(self, sources: Sequence[list[int]], targets: Sequence[list[int]]) -> torch.Tensor:
        """As PromptedModel.target_logprob_sum; packed (no padding) where the model allows it."""
        continuations = [[target] for target in targets]
        if self._packs(sources, continuations, [self] * len(sources)):
            return torch.cat(packed_scores([self] * len(sources), sources, continuations))
        return super().target_logprob_sum(sources, targets)

    def _packs(self, rows, continuations, prompts) -> bool:
        if not self.share_prompt_cache:  # the plain path (reference, gradient checkpointing) stays as PEFT does it
            return False
        sizes = (lm.n_prompt + len(row) + max(map(len, conts)) for row, conts, lm in zip(rows, continuations, prompts))
        return packable(self.base.config, max(sizes, default=0))

    def _continuation_logprobs_plain(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, continuations: Sequence[Sequence[list[int]]]
    ) -> list[torch.Tensor]:
        """The reference: one full sequence per (row, continuation)."""
        lengths = attention_mask.sum(1).tolist()
        rows = [ids[len(ids) - n :] for ids, n in zip(input_ids.tolist(), lengths)]
        pairs = [(row, cont) for row, conts in zip(rows, continuations) for cont in conts]
        batch = target_batch([r for r, _ in pairs], [c for _, c in pairs], pad_id=0)  # pads are masked out
        logprobs, _ = self.target_logprobs(batch.input_ids, batch.attention_mask, batch.target_lengths)
        return list(logprobs.sum(1).split([len(conts) for conts in continuations]))

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | None,
        *,
        use_cache: bool = True,
        temperature: float = 0.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        cache: DynamicCache | None = None,
    ) -> list[list[int]]:
        """Greedy (temperature 0) or sampled continuation of left-padded inputs; stops at EOS.

        `cache` (from `mixed_prompt_cache`) gives each row its own task's prompt."""
        batch = input_ids.shape[0]
        new = input_ids.new_zeros(batch, 0)
        done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
        step_ids, step_mask = input_ids, attention_mask
        for _ in range(max_new_tokens):
            if cache is not None or (use_cache and self.share_prompt_cache):
                hidden, cache = self.hidden_states(step_ids, step_mask, cache)
            else:
                full_ids = torch.cat([input_ids, new], dim=1)
                full_mask = torch.cat([attention_mask, attention_mask.new_ones(new.shape)], dim=1)
                hidden, _ = self.hidden_states(full_ids, full_mask)
            next_ids = _pick(self.logits(hidden[:, -1]), temperature, top_p, generator)
            if eos_token_id is not None:
                next_ids = torch.where(done, eos_token_id, next_ids)
                done |= next_ids == eos_token_id
            new = torch.cat([new, next_ids.unsqueeze(1)], dim=1)
            step_ids, step_mask = next_ids.unsqueeze(1), attention_mask.new_ones(batch, 1)
            if done.all():
                break
        return [_until_eos(row, eos_token_id) for row in new.tolist()]


def mixed_prompt_cache(lms: Sequence[PromptedLM]) -> DynamicCache:
    """A cache whose row i holds `lms[i]`'s prompt keys/values (all on one base model).

    Shorter prompts are left-padded with masked slots; each prompt keeps the positions it was computed
    at, and the text after it continues from its real length, so a row scores as it would alone.
    """
    unique = list({id(lm): lm for lm in lms}.values())
    slot = {id(lm): index for index, lm in enumerate(unique)}
    rows = torch.tensor([slot[id(lm)] for lm in lms])
    longest = max(lm.n_prompt for lm in unique)
    kvs = [lm.prompt_kv() for lm in unique]
    layers = []
    for layer in range(len(kvs[0])):
        keys, values = (
            torch.cat([F.pad(kv[layer][part], (0, 0, longest - kv[layer][part].shape[2], 0)) for kv in kvs])[rows]
            for part in (0, 1)
        )
        layers.append((keys, values))
    cache = DynamicCache(layers, config=unique[0].base.config)
    masks = torch.stack([(torch.arange(longest) >= longest - lm.n_prompt).long() for lm in unique])
    cache.attention_mask = masks[rows]
    return cache


def _positions(mask: torch.Tensor, start: int) -> torch.Tensor:
    """Position ids that count real tokens only (pads get the position of the next real token)."""
    return (start + mask.long().cumsum(1) - 1).clamp(min=start)


def _pick(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    if temperature < 1e-5:  # greedy; a float32 division by a tinier temperature would give 0/0
        return logits.argmax(-1)
    probs = F.softmax((logits - logits.amax(-1, keepdim=True)) / temperature, dim=-1)  # no inf - inf at tiny T
    if top_p < 1.0:
        sorted_probs, order = probs.sort(-1, descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
        keep[..., 0] = True  # the most likely token always stays, whatever top_p rounds to
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _until_eos(row: list[int], eos_token_id: int | None) -> list[int]:
    return row[: row.index(eos_token_id)] if eos_token_id is not None and eos_token_id in row else row
