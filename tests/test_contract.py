"""One contract, two architectures: the same calls, with the same meaning, on the real default model
(decoder-only) and on a tiny T5 (encoder-decoder). Mixed-prompt batches, scores that are the base model's own
log-probabilities (in every scoring mode of a decoder-only model), generation, the training terms and ensembles
work on both, and a prompt on another base is refused in one line."""

from __future__ import annotations

import pytest
import torch

from softprompt.data.batching import pad_left
from softprompt.data.tasks import Task
from softprompt.engine.prompted import ScoringMode
from softprompt.models.base import Base
from softprompt.models.prompt import init_prompt
from softprompt.prompts.tuned import TunedPrompt
from softprompt.toolbox.ensemble import member_scores

TASK = Task("Tweet text : {text} Label : ", "label", ["complaint", "no complaint"])
TEXTS = ["@united lost my bag again", "what a lovely flight", "delayed three hours, nobody tells us anything", "ok"]


def _tuned(base, seed: int, n_tokens: int) -> TunedPrompt:
    model, tokenizer = base
    prompt = init_prompt(n_tokens, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=seed)
    return TunedPrompt.build(Base(model, tokenizer), prompt, TASK)


@pytest.fixture(params=["smollm2", "t5"])
def pair(request) -> tuple[TunedPrompt, TunedPrompt]:
    """Two prompts of different lengths on one base of each architecture."""
    base = request.getfixturevalue(request.param)
    return _tuned(base, seed=1, n_tokens=6), _tuned(base, seed=2, n_tokens=3)


def _by_hand(tuned: TunedPrompt, row: list[int], label: list[int]) -> torch.Tensor:
    """log p(label | prompt, row) summed over the label's tokens, from the base model called plainly."""
    model, prompt = tuned.lm.model, tuned.lm.prompt.embedding.unsqueeze(0)
    embed = model.get_input_embeddings()
    if model.config.is_encoder_decoder:
        states = model.get_encoder()(inputs_embeds=torch.cat([prompt, embed(torch.tensor([row]))], dim=1))
        decoder_ids = torch.tensor([[model.config.decoder_start_token_id, *label[:-1]]])
        logits = model(encoder_outputs=states, decoder_input_ids=decoder_ids).logits[0]
    else:
        ids = torch.tensor([row + label])
        logits = model(inputs_embeds=torch.cat([prompt, embed(ids)], dim=1)).logits[0, -len(label) - 1 : -1]
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, torch.tensor(label).unsqueeze(-1)).sum()


class TestPromptedModelContract:
    def _rows(self, tuned: TunedPrompt) -> list[list[int]]:
        return [tuned.encoder.input_ids({"text": text}) for text in TEXTS]

    @torch.no_grad()
    def test_a_mixed_prompt_batch_scores_each_row_as_alone(self, pair):
        a, b = pair
        rows, owners = self._rows(a) * 2, [a, b, b, a, b, a, a, b]
        labels = [a.encoder.label_ids] * len(rows)
        mixed = a.lm.score_rows(rows, labels, [t.lm for t in owners], batch_size=4)
        for row, owner, scores in zip(rows, owners, mixed):
            alone = owner.lm.score_rows([row], [owner.encoder.label_ids])[0]
            assert torch.allclose(scores, alone, atol=1e-4), (scores, alone)

    @torch.no_grad()
    def test_scores_are_the_models_own_label_log_probabilities(self, pair):
        """Each row's label scores, computed by hand from the base model's logits with the prompt's embeddings
        in front: the decoder-only model in every scoring mode (each a different code path), the
        encoder-decoder in the one it has (its encoder sees the prompt and the input, its decoder the label)."""
        a, _ = pair
        rows = self._rows(a)
        labels = [a.encoder.label_ids] * len(rows)
        expected = torch.stack([torch.stack([_by_hand(a, row, label) for label in labels[0]]) for row in rows])
        modes = [None] if a.lm.model.config.is_encoder_decoder else list(ScoringMode)
        for mode in modes:
            scores = torch.stack(a.lm.score_rows(rows, labels, mode=mode))
            torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4, msg=f"mode {mode}")

    def test_a_mixed_prompt_batch_generates_each_row_as_alone(self, pair):
        a, b = pair
        rows, owners = self._rows(a), [a, b, b, a]
        eos = a.tokenizer.eos_token_id
        ids, mask = pad_left(rows, a.tokenizer.pad_token_id, device="cpu")
        mixed = a.lm.generate(ids, mask, 5, eos, prompts=[t.lm for t in owners])
        for row, owner, tokens in zip(rows, owners, mixed):
            alone = owner.lm.generate(torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long), 5, eos)[0]
            assert tokens == alone

    def test_training_terms_and_loss_agree_and_reach_the_prompt(self, pair):
        a, _ = pair
        rows = self._rows(a)
        targets = [a.encoder.label_ids[i % 2] for i in range(len(rows))]
        terms = a.lm.target_logprob_sum(rows, targets)
        (-terms.sum()).backward()
        assert terms.shape == (len(rows),) and bool((terms < 0).all())
        assert a.lm.prompt.embedding.grad is not None and a.lm.prompt.embedding.grad.abs().sum() > 0
        with torch.no_grad():
            scores = torch.stack(a.lm.score_rows(rows, [a.encoder.label_ids] * len(rows)))
        assert torch.allclose(terms.detach(), scores[torch.arange(len(rows)), torch.arange(len(rows)) % 2], atol=1e-4)

    def test_an_ensemble_runs_over_the_members(self, pair):
        a, b = pair
        rows = [{"text": text} for text in TEXTS]
        scores = member_scores([a, b], rows, batch_size=3)
        assert scores.shape == (2, len(rows), len(TASK.labels))
        for member, member_rows in zip((a, b), scores):
            alone = torch.tensor([list(p["scores"].values()) for p in member.predict(rows)])
            assert torch.allclose(member_rows, alone, atol=1e-4)

    def test_a_prompt_on_another_base_is_refused_in_one_line(self, pair, tiny):
        a, _ = pair
        other = _tuned(tiny, seed=1, n_tokens=2)
        with pytest.raises(ValueError, match="^every prompt of a batch must run on this model's base$"):
            a.lm.score_rows(self._rows(a)[:2], [a.encoder.label_ids] * 2, [a.lm, other.lm])
