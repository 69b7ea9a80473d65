"""One contract, two architectures: the same calls, with the same meaning, on the real default model
(decoder-only) and on a tiny T5 (encoder-decoder). Mixed-prompt batches, every scoring mode, generation,
the training terms and ensembles work on both, and a prompt on another base is refused in one line."""

from __future__ import annotations

import pytest
import torch

from softprompt.data.batching import pad_left
from softprompt.data.tasks import Task
from softprompt.engine.prompted import ScoringMode
from softprompt.models.prompt import init_prompt
from softprompt.prompts.tuned import TunedPrompt
from softprompt.toolbox.ensemble import member_scores

TASK = Task("Tweet text : {text} Label : ", "label", ["complaint", "no complaint"])
TEXTS = ["@united lost my bag again", "what a lovely flight", "delayed three hours, nobody tells us anything", "ok"]


def _tuned(base, seed: int, n_tokens: int) -> TunedPrompt:
    model, tokenizer = base
    prompt = init_prompt(n_tokens, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=seed)
    return TunedPrompt.build(model, tokenizer, prompt, TASK)


@pytest.fixture(params=["smollm2", "t5"])
def pair(request) -> tuple[TunedPrompt, TunedPrompt]:
    """Two prompts of different lengths on one base of each architecture."""
    base = request.getfixturevalue(request.param)
    return _tuned(base, seed=1, n_tokens=6), _tuned(base, seed=2, n_tokens=3)


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
    def test_every_scoring_mode_gives_the_reference_scores(self, pair):
        a, _ = pair
        rows = self._rows(a)
        labels = [a.encoder.label_ids] * len(rows)
        reference = torch.stack(a.lm.score_rows(rows, labels, mode=ScoringMode.REFERENCE))
        for mode in ScoringMode:
            scores = torch.stack(a.lm.score_rows(rows, labels, mode=mode))
            assert torch.allclose(scores, reference, atol=1e-4), mode

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
