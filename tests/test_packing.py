"""Packed scoring: rows and their continuations laid end to end score exactly as each row does alone."""

from functools import partial

import pytest
import torch

from softprompt.data.batching import Encoder
from softprompt.data.tasks import Task
from softprompt.engine.causal import PromptedCausalLM
from softprompt.engine.packing import build_packs, packable
from softprompt.engine.prompted import ScoringMode
from softprompt.models.base import load_base
from softprompt.models.prompt import init_prompt

TEXTS = [
    "@united lost my bag again and nobody answers the phone",
    "what a lovely flight",
    "the match ended in a draw after extra time and a long, tense shoot-out",
    "ok",
]


def test_build_packs_layout():
    rows = [[1, 2, 3], [4], [5, 6]]
    conts = [[[7, 8], [9]], [[7, 8, 10]], [[11]]]
    packs = build_packs(rows, conts, offsets=[2, 5, 0], pack_tokens=7)
    # 9 tokens in all: two packs of at most 5, filled longest first.
    assert [sorted(set(p.row)) for p in packs] == [[0], [1, 2]]
    first, second = packs
    # Row 0: 3 tokens at positions 2..4, then continuation [7, 8] minus its last token; [9] adds no token.
    assert first.ids == [1, 2, 3, 7] and first.positions == [2, 3, 4, 5] and first.branch == [-1, -1, -1, 0]
    # Targets: (index predicting it, token, row, continuation); first tokens come from the row's last token.
    assert sorted(first.targets) == [(2, 7, 0, 0), (2, 9, 0, 1), (3, 8, 0, 0)]
    assert second.ids == [4, 7, 8, 5, 6] and second.positions == [5, 6, 7, 0, 1]  # positions restart per row
    assert second.row == [1, 1, 1, 2, 2]
    assert sorted(second.targets) == [(0, 7, 1, 0), (1, 8, 1, 0), (2, 10, 1, 0), (4, 11, 2, 0)]
    with pytest.raises(ValueError, match="row 0 is empty"):
        build_packs([[]], [[[1]]], [0], 8)


def _lms_and_labels(model, tokenizer, heads=((), ())):
    embeddings = model.get_input_embeddings()
    lms = [
        PromptedCausalLM(model, init_prompt(8, embeddings, tokenizer, "text", init_text="Is this a complaint?"),
                         head=heads[0]),
        PromptedCausalLM(model, init_prompt(3, embeddings, tokenizer, "sampled-vocab", seed=5), head=heads[1]),
    ]  # fmt: skip
    eos = [tokenizer.eos_token_id]
    labels = [
        [tokenizer(w, add_special_tokens=False)["input_ids"] + eos for w in ("complaint", "no complaint")],
        [tokenizer(w, add_special_tokens=False)["input_ids"] + eos for w in ("positive", "negative", "so-so")],
    ]
    return lms, labels


def _assert_packed_equals_alone(model, tokenizer, atol=1e-4):
    lms, labels = _lms_and_labels(model, tokenizer)
    rows = [tokenizer(t)["input_ids"] for t in TEXTS] * 2
    owners = [0, 1, 1, 0, 1, 0, 0, 1]
    with torch.no_grad():
        packed = lms[0].score_rows(rows, [labels[o] for o in owners], [lms[o] for o in owners], batch_size=8)
        for row, owner, scores in zip(rows, owners, packed):
            ids = torch.tensor([row])
            alone = lms[owner].continuation_logprobs(ids, torch.ones_like(ids), [labels[owner]])[0]
            assert torch.allclose(scores, alone, atol=atol), (scores, alone)


def test_packed_mixed_tasks_equal_each_row_alone_real_model(smollm2):
    assert packable(smollm2[0].config)
    _assert_packed_equals_alone(*smollm2)


def test_packed_scoring_gemma3_real_model():
    """Gemma-3 (sliding-window layers, scaled embeddings, soft-capped logits) packs too."""
    _assert_packed_equals_alone(*load_base("gemma3-270m", "float32"))


def test_unpackable_models_take_the_padded_path(smollm2):
    from transformers import BloomConfig, BloomForCausalLM

    model, tokenizer = smollm2
    config = BloomConfig(vocab_size=len(tokenizer), hidden_size=32, n_layer=2, n_head=4)
    bloom = BloomForCausalLM(config).eval()
    assert not packable(bloom.config)
    prompt = init_prompt(4, bloom.get_input_embeddings(), tokenizer, "sampled-vocab", seed=1)
    lm = PromptedCausalLM(bloom, prompt)
    rows = [tokenizer(t)["input_ids"] for t in TEXTS]
    labels = [[[5, 6], [7]]] * len(rows)
    with torch.no_grad():
        scores = lm.score_rows(rows, labels)
        plain = PromptedCausalLM(bloom, prompt, ScoringMode.REFERENCE).score_rows(rows, labels)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(scores, plain))


def _assert_packed_training_equals_padded(lm: PromptedCausalLM, sources, targets) -> None:
    """The training terms (label log-likelihoods) packed give the padded path's loss and gradient."""
    results = []
    for terms_of in (lm.target_logprob_sum, partial(lm.target_logprob_sum, mode=ScoringMode.CACHED)):  # packed, padded
        lm.prompt.embedding.grad = None
        terms = terms_of(sources, targets)
        terms.sum().backward()
        results.append((terms.detach(), lm.prompt.embedding.grad.clone()))
    (packed_terms, packed_grad), (padded_terms, padded_grad) = results
    assert torch.allclose(packed_terms, padded_terms, atol=1e-4)
    assert float((packed_grad - padded_grad).norm() / padded_grad.norm()) < 1e-4


def test_packed_training_loss_and_gradient_equal_padded_real_model(smollm2):
    """The training terms (label log-likelihoods) packed give the padded path's loss and gradient."""
    model, tokenizer = smollm2
    prompt = init_prompt(8, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=3)
    lm = PromptedCausalLM(model, prompt)
    sources = [tokenizer(t)["input_ids"] for t in TEXTS]
    targets = [tokenizer(w, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for w in
               ("complaint", "no complaint", "sports", "no")]  # fmt: skip
    _assert_packed_training_equals_padded(lm, sources, targets)


TEMPLATES = [
    Task("Tweet text : {text} Label : ", "label", ["complaint", "no complaint"]),
    Task("Sentence : {text} Sentiment : ", "label", ["positive", "negative", "so-so"]),
]


def _templated(model, tokenizer):
    """Two prompts told their tasks' template heads (Encoder.head), as TunedPrompt.build does, and eight
    rows rendered through those templates."""
    encoders = [Encoder(task, tokenizer) for task in TEMPLATES]
    lms, labels = _lms_and_labels(model, tokenizer, [encoder.head for encoder in encoders])
    owners = [0, 1, 1, 0, 1, 0, 0, 1]
    rows = [encoders[o].input_ids({"text": text}) for o, text in zip(owners, TEXTS * 2)]
    return lms, labels, encoders, owners, rows


def test_template_heads_are_cached_with_the_prompt_real_model(smollm2):
    """Rows that start with their prompt's template head score as they do alone, the head's keys/values
    computed once with the prompt; a prompt with a row lacking the head runs that call without it."""
    model, tokenizer = smollm2
    lms, labels, encoders, owners, rows = _templated(model, tokenizer)
    assert all(len(e.head) >= 2 for e in encoders)
    assert all(row[: len(encoders[o].head)] == encoders[o].head for row, o in zip(rows, owners))
    with torch.no_grad():
        packed = lms[0].score_rows(rows, [labels[o] for o in owners], [lms[o] for o in owners], batch_size=8)
        assert lms[0].prompt_cache.heads() == {tuple(encoders[0].head)}  # the head joined the prompt's cache
        for row, owner, scores in zip(rows, owners, packed):
            ids = torch.tensor([row])
            alone = lms[owner].continuation_logprobs(ids, torch.ones_like(ids), [labels[owner]])[0]
            assert torch.allclose(scores, alone, atol=1e-4), (scores, alone)
        odd = tokenizer("Sentence was: " + TEXTS[0])["input_ids"]  # owner 1's row without its head
        mixed = lms[0].score_rows([*rows[:7], odd], [labels[o] for o in owners], [lms[o] for o in owners], batch_size=8)
        ids = torch.tensor([odd])
        assert torch.allclose(mixed[7], lms[1].continuation_logprobs(ids, torch.ones_like(ids), [labels[1]])[0],
                              atol=1e-4)  # fmt: skip
        assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(mixed[:7], packed[:7]))
        lms[0].prompt.embedding.add_(0.5)  # a changed prompt never reuses the cached head
        changed = lms[0].score_rows(rows[:1], [labels[0]])[0]
        ids = torch.tensor([rows[0]])
        fresh = PromptedCausalLM(model, lms[0].prompt, ScoringMode.REFERENCE).continuation_logprobs(
            ids, torch.ones_like(ids), [labels[0]]
        )[0]
    assert not torch.allclose(changed, packed[0], atol=1e-3)
    assert torch.allclose(changed, fresh, atol=1e-4)


def test_template_head_training_gradient_equals_padded_real_model(smollm2):
    model, tokenizer = smollm2
    lms, labels, _, owners, rows = _templated(model, tokenizer)
    lm = lms[0]
    sources = [row for row, o in zip(rows, owners) if o == 0]
    targets = [labels[0][i % 2] for i in range(len(sources))]
    _assert_packed_training_equals_padded(lm, sources, targets)


def test_packed_inline_gives_the_cached_scores_real_model(smollm2):
    """In the packed-inline mode, packed scoring runs the prompt (and template head) at the front of every
    forward and never computes its keys/values apart; the scores are those of the cached path."""
    model, tokenizer = smollm2
    lms, labels, encoders, owners, rows = _templated(model, tokenizer)
    mine = [row for row, o in zip(rows, owners) if o == 0] * 4  # 16 rows: several packs and forwards
    conts = [labels[0]] * len(mine)
    fresh = PromptedCausalLM(model, lms[0].prompt, ScoringMode.PACKED_INLINE, head=encoders[0].head)

    def no_separate_pass(head=()):
        raise AssertionError("prompt_kv called")

    with torch.no_grad():
        cached = torch.stack(lms[0].score_rows(mine, conts, batch_size=8))
        assert lms[0].prompt_cache.heads() == {tuple(encoders[0].head)}
        fresh.prompt_kv = no_separate_pass
        inline = torch.stack(fresh.score_rows(mine, conts, batch_size=8))
    assert torch.allclose(inline, cached, atol=1e-4)
    assert torch.equal(inline.argmax(1), cached.argmax(1))
