"""PromptedSeq2SeqLM: soft prompts for encoder-decoder models (T5 family), as the paper trains them.

The prompt goes in front of the encoder input. The encoder sees it bidirectionally, so its states depend on
the input and there is no prompt cache to share: embeddings are concatenated, as PEFT does, whatever the
scoring mode, and a batch of several prompts runs one prompt after another (prompted.py). The label is the
decoder's target.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..data.batch_map import BatchMap
from ..data.batching import pad_left, pad_right
from .decoding import decode
from .prompted import PromptedModel, ScoringMode


class PromptedSeq2SeqLM(PromptedModel):
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states of [prompt; input] and their attention mask.

        Inputs are moved to the right of their pads first: T5's relative position bias would otherwise see
        pads between prompt and text as distance.
        """
        order = torch.argsort(1 - attention_mask.long(), dim=1, stable=True)  # real tokens first, in order
        input_ids, attention_mask = input_ids.gather(1, order), attention_mask.gather(1, order)
        embeds = self.model.get_input_embeddings()(input_ids)
        batch = input_ids.shape[0]
        prompt = self.prompt().to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
        mask = torch.cat([attention_mask.new_ones(batch, self.n_prompt), attention_mask], dim=1)
        states = self.model.get_encoder()(inputs_embeds=torch.cat([prompt, embeds], dim=1), attention_mask=mask)
        return states.last_hidden_state, mask

    def _start(self, rows: int, device: torch.device) -> torch.Tensor:
        return torch.full((rows, 1), self.model.config.decoder_start_token_id, dtype=torch.long, device=device)

    def decode_logprobs(
        self, states: torch.Tensor, mask: torch.Tensor, targets: Sequence[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """([R, M] log-probabilities of each target's tokens, [R, M] mask) given encoder states per row."""
        target_ids, target_mask = pad_right(targets, self.model.config.pad_token_id, device=states.device)
        decoder_ids = torch.cat([self._start(len(targets), states.device), target_ids[:, :-1]], dim=1)
        out = self.model(encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=decoder_ids,
                        decoder_attention_mask=torch.ones_like(decoder_ids), use_cache=False)  # fmt: skip
        logprobs = F.log_softmax(out.logits.float(), dim=-1)
        picked = logprobs.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)
        return picked * target_mask, target_mask.bool()

    def target_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_lengths: torch.Tensor, mode=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows are input + target, left-padded; the last target_lengths[i] tokens become row i's decoder
        target, the rest its encoder input."""
        lengths = attention_mask.sum(1).tolist()
        rows = [ids[len(ids) - n :] for ids, n in zip(input_ids.tolist(), lengths)]
        cuts = [len(row) - int(t) for row, t in zip(rows, target_lengths)]
        ids, mask = pad_left([row[:cut] for row, cut in zip(rows, cuts)], self.model.config.pad_token_id,
                             device=input_ids.device)  # fmt: skip
        states, full_mask = self.encode(ids, mask)
        return self.decode_logprobs(states, full_mask, [row[cut:] for row, cut in zip(rows, cuts)])

    def continuation_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, continuations, mode=None
    ) -> list[torch.Tensor]:
        """Each row's continuations scored as decoder targets; the encoder runs once per row."""
        states, mask = self.encode(input_ids, attention_mask)
        conts = BatchMap.of(continuations)
        owners = torch.tensor(conts.owner, dtype=torch.long, device=states.device)
        logprobs, _ = self.decode_logprobs(states[owners], mask[owners], conts.items)
        return conts.split(logprobs.sum(1))

    def _generate_alone(self, input_ids, attention_mask, max_new_tokens, eos_token_id, mode, sampling) -> list:
        """The decoder keeps its keys/values between steps, except in the reference mode."""
        states, mask = self.encode(input_ids, attention_mask)
        use_cache = mode is not ScoringMode.REFERENCE
        decoded = [self._start(input_ids.shape[0], input_ids.device)]
        past = None

        def step(last: torch.Tensor | None) -> torch.Tensor:
            nonlocal past
            decoded.extend([] if last is None else [last[:, None]])
            ids = decoded[-1] if use_cache and past is not None else torch.cat(decoded, dim=1)
            out = self.model(encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=ids, cache=past,
                            use_cache=use_cache)  # fmt: skip
            past = out.cache if use_cache else None
            return out.logits[:, -1].float()

        return decode(step, input_ids.shape[0], max_new_tokens, eos_token_id, **sampling)
