"""Seq2SeqPromptedLM: soft prompts for encoder-decoder models (T5 family), as the paper trains them.

The prompt goes in front of the encoder input. The encoder sees it bidirectionally, so its states depend
on the input and there is no prompt cache to share: embeddings are concatenated, as PEFT does. The label is
the decoder's target. The methods mirror PromptedLM's, so training, evaluation and prediction use either.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .batching import pad_left, pad_right
from .lm import PromptedModel, _pick, _until_eos


class Seq2SeqPromptedLM(PromptedModel):
    share_prompt_cache = False  # nothing to share: the prompt's encoder states depend on the input

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states of [prompt; input] and their attention mask.

        Inputs are moved to the right of their pads first: T5's relative position bias would otherwise see
        pads between prompt and text as distance.
        """
        order = torch.argsort(1 - attention_mask.long(), dim=1, stable=True)  # real tokens first, in order
        input_ids, attention_mask = input_ids.gather(1, order), attention_mask.gather(1, order)
        embeds = self.base.get_input_embeddings()(input_ids)
        batch = input_ids.shape[0]
        prompt = self.prompt().to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
        mask = torch.cat([attention_mask.new_ones(batch, self.n_prompt), attention_mask], dim=1)
        states = self.base.get_encoder()(inputs_embeds=torch.cat([prompt, embeds], dim=1), attention_mask=mask)
        return states.last_hidden_state, mask

    def _start(self, rows: int, device: torch.device) -> torch.Tensor:
        return torch.full((rows, 1), self.base.config.decoder_start_token_id, dtype=torch.long, device=device)

    def decode_logprobs(
        self, states: torch.Tensor, mask: torch.Tensor, targets: Sequence[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """([R, M] log-probabilities of each target's tokens, [R, M] mask) given encoder states per row."""
        target_ids, target_mask = (t.to(states.device) for t in pad_right(targets, self.base.config.pad_token_id))
        decoder_ids = torch.cat([self._start(len(targets), states.device), target_ids[:, :-1]], dim=1)
        out = self.base(encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=decoder_ids,
                        decoder_attention_mask=torch.ones_like(decoder_ids), use_cache=False)  # fmt: skip
        logprobs = F.log_softmax(out.logits.float(), dim=-1)
        picked = logprobs.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)
        return picked * target_mask, target_mask.bool()

    def target_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """PromptedLM's interface: rows are input + target, left-padded; the last target_lengths[i] tokens
        become row i's decoder target, the rest its encoder input."""
        lengths = attention_mask.sum(1).tolist()
        rows = [ids[len(ids) - n :] for ids, n in zip(input_ids.tolist(), lengths)]
        cuts = [len(row) - int(t) for row, t in zip(rows, target_lengths)]
        ids, mask = pad_left([row[:cut] for row, cut in zip(rows, cuts)], self.base.config.pad_token_id)
        states, full_mask = self.encode(ids.to(input_ids.device), mask.to(input_ids.device))
        return self.decode_logprobs(states, full_mask, [row[cut:] for row, cut in zip(rows, cuts)])

    def continuation_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, continuations, cache=None
    ) -> list[torch.Tensor]:
        """Each row's continuations scored as decoder targets; the encoder runs once per row."""
        if cache is not None:
            raise ValueError("mixed-prompt batches are for decoder-only models")
        states, mask = self.encode(input_ids, attention_mask)
        owners = torch.tensor([row for row, conts in enumerate(continuations) for _ in conts])
        flat = [cont for conts in continuations for cont in conts]
        logprobs, _ = self.decode_logprobs(states[owners], mask[owners], flat)
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
        cache=None,
    ) -> list[list[int]]:
        """Greedy or sampled decoding; with `use_cache` the decoder keeps its keys/values between steps."""
        if cache is not None:
            raise ValueError("mixed-prompt batches are for decoder-only models")
        states, mask = self.encode(input_ids, attention_mask)
        batch = input_ids.shape[0]
        decoded = self._start(batch, input_ids.device)
        done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
        past = None
        for _ in range(max_new_tokens):
            step = decoded[:, -1:] if use_cache and past is not None else decoded
            out = self.base(encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=step, cache=past,
                            use_cache=use_cache)  # fmt: skip
            past = out.cache if use_cache else None
            next_ids = _pick(out.logits[:, -1].float(), temperature, top_p, generator)
            if eos_token_id is not None:
                next_ids = torch.where(done, eos_token_id, next_ids)
                done |= next_ids == eos_token_id
            decoded = torch.cat([decoded, next_ids.unsqueeze(1)], dim=1)
            if done.all():
                break
        return [_until_eos(row, eos_token_id) for row in decoded[:, 1:].tolist()]
