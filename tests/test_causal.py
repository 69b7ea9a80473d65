"""PromptedCausalLM: the shared prompt cache equals plain concatenation (the reference mode); cached generation
equals recompute; rows of several prompts in one batch score and generate as they do alone."""

import pytest
import torch
from transformers import BloomConfig, BloomForCausalLM, GPT2Config, GPT2LMHeadModel

from softprompt.data.batching import pad_left
from softprompt.engine.causal import PromptedCausalLM
from softprompt.engine.prompted import ScoringMode
from softprompt.models.prompt import init_prompt

TEXTS = [
    "@united my flight was delayed three hours and nobody told us anything",
    "Thanks for the quick reply!",
    "I have been on hold with customer service for forty minutes, this is the worst airline ever",
]


def _batch(tokenizer):
    return pad_left([tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS], tokenizer.pad_token_id,
                    device="cpu")


def _loss_and_grad(lm: PromptedCausalLM, ids, mask, lengths):
    lm.prompt.embedding.grad = None
    loss = lm.loss(ids, mask, lengths)
    loss.backward()
    return loss.detach(), lm.prompt.embedding.grad.clone()


@pytest.mark.parametrize("n_tokens", [1, 20])
def test_shared_cache_matches_concatenation_real_model(smollm2, n_tokens):
    model, tokenizer = smollm2
    prompt = init_prompt(n_tokens, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=n_tokens)
    _assert_cache_matches_concatenation(model, prompt, tokenizer, torch.tensor([3, 2, 4]))


def _assert_cache_matches_concatenation(model, prompt, tokenizer, lengths) -> None:
    """Same loss (rtol 1e-5) and gradient (relative difference < 1e-4) on both paths."""
    ids, mask = _batch(tokenizer)
    fast = _loss_and_grad(PromptedCausalLM(model, prompt, ScoringMode.CACHED), ids, mask, lengths)
    plain = _loss_and_grad(PromptedCausalLM(model, prompt, ScoringMode.REFERENCE), ids, mask, lengths)
    assert torch.allclose(fast[0], plain[0], rtol=1e-5)
    assert (fast[1] - plain[1]).norm() / plain[1].norm() < 1e-4


def test_left_padding_does_not_change_a_row(smollm2):
    """Pads between prompt and text are invisible: a padded row scores as it does alone."""
    model, tokenizer = smollm2
    lm = PromptedCausalLM(model, init_prompt(8, model.get_input_embeddings(), tokenizer, "text", init_text="Classify:"))
    ids, mask = _batch(tokenizer)
    with torch.no_grad():
        batched, _ = lm.target_logprobs(ids, mask, torch.tensor([2, 2, 2]))
        alone_ids = torch.tensor([tokenizer(TEXTS[1], add_special_tokens=False)["input_ids"]])
        alone, _ = lm.target_logprobs(alone_ids, torch.ones_like(alone_ids), torch.tensor([2]))
    assert mask[1].sum() < mask.shape[1]
    assert torch.allclose(batched[1], alone[0], atol=1e-4)


def test_greedy_generation_cached_equals_recompute_real_model(smollm2):
    model, tokenizer = smollm2
    lm = PromptedCausalLM(model, init_prompt(8, model.get_input_embeddings(), tokenizer, "text", init_text="Reply:"))
    ids, mask = _batch(tokenizer)
    cached = lm.generate(ids, mask, 16, tokenizer.eos_token_id)
    recompute = PromptedCausalLM(model, lm.prompt, ScoringMode.REFERENCE).generate(
        ids, mask, 16, tokenizer.eos_token_id, mode=ScoringMode.REFERENCE
    )
    assert cached == recompute
    assert all(len(row) > 0 for row in cached)


def test_inference_cache_follows_prompt_changes(tiny):
    model, tokenizer = tiny
    lm = PromptedCausalLM(model, init_prompt(4, model.get_input_embeddings(), tokenizer, "random-uniform"))
    ids, mask = _batch(tokenizer)
    lengths = torch.tensor([2, 2, 2])
    with torch.no_grad():
        first = lm.target_logprobs(ids, mask, lengths)[0]
        again = lm.target_logprobs(ids, mask, lengths)[0]
        lm.prompt.embedding.add_(0.5)  # an optimizer step is an in-place update like this one
        changed = lm.target_logprobs(ids, mask, lengths)[0]
        fresh = PromptedCausalLM(model, lm.prompt, ScoringMode.REFERENCE).target_logprobs(ids, mask, lengths)[0]
    assert torch.equal(first, again)
    assert not torch.allclose(first, changed)
    assert torch.allclose(changed, fresh, atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda v: GPT2LMHeadModel(GPT2Config(vocab_size=v, n_embd=32, n_layer=2, n_head=4, n_positions=256)),
        lambda v: BloomForCausalLM(BloomConfig(vocab_size=v, hidden_size=32, n_layer=2, n_head=4)),
    ],
    ids=["gpt2", "bloom"],
)
def test_other_architectures(smollm2, make):
    """GPT-2 (learned positions) and BLOOM (ALiBi) keep working on both paths."""
    tokenizer = smollm2[1]
    torch.manual_seed(0)
    model = make(len(tokenizer)).eval().requires_grad_(False)
    prompt = init_prompt(5, model.get_input_embeddings(), tokenizer, "random-uniform", seed=1)
    _assert_cache_matches_concatenation(model, prompt, tokenizer, torch.tensor([2, 3, 2]))
    ids, mask = _batch(tokenizer)
    lm = PromptedCausalLM(model, prompt)
    assert lm.generate(ids, mask, 6, None) == lm.generate(ids, mask, 6, None, mode=ScoringMode.REFERENCE)


def test_label_scoring_in_one_pass_equals_full_sequences(smollm2):
    """Scoring labels by repeating the inputs' cache gives the scores of one full sequence per label."""
    model, tokenizer = smollm2
    prompt = init_prompt(8, model.get_input_embeddings(), tokenizer, "text", init_text="Classify the tweet:")
    labels = [
        tokenizer(w, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for w in ("complaint", "no complaint", "maybe")
    ]
    ids, mask = _batch(tokenizer)
    with torch.no_grad():
        fast = torch.stack(PromptedCausalLM(model, prompt).continuation_logprobs(ids, mask, [labels] * 3))
        plain = PromptedCausalLM(model, prompt, ScoringMode.REFERENCE).continuation_logprobs(ids, mask, [labels] * 3)
    assert fast.shape == (3, 3)
    assert torch.allclose(fast, torch.stack(plain), atol=1e-4)


def test_mixed_task_batch_equals_each_task_alone(smollm2):
    """Rows carrying different prompts (of different lengths) in one forward score as they do alone."""
    model, tokenizer = smollm2
    embeddings = model.get_input_embeddings()
    lms = [
        PromptedCausalLM(model, init_prompt(8, embeddings, tokenizer, "text", init_text="Is this a complaint?")),
        PromptedCausalLM(model, init_prompt(3, embeddings, tokenizer, "sampled-vocab", seed=5)),
    ]
    label_sets = [
        [tokenizer(w, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for w in words]
        for words in (["complaint", "no complaint"], ["positive", "negative", "neutral"])
    ]
    owners = [0, 1, 0]
    ids, mask = _batch(tokenizer)
    rows = [ids[row, mask[row].argmax() :].tolist() for row in range(len(owners))]
    prompts = [lms[o] for o in owners]
    with torch.no_grad():
        mixed = lms[0].score_rows(rows, [label_sets[o] for o in owners], prompts, mode=ScoringMode.CACHED)
        generated = lms[0].generate(ids, mask, 8, tokenizer.eos_token_id, prompts=prompts)
        for row, owner in enumerate(owners):
            alone_ids = ids[row : row + 1, mask[row].argmax() :]
            alone = lms[owner].continuation_logprobs(alone_ids, torch.ones_like(alone_ids), [label_sets[owner]])
            assert torch.allclose(mixed[row], alone[0], atol=1e-4)
            assert (
                generated[row]
                == lms[owner].generate(alone_ids, torch.ones_like(alone_ids), 8, tokenizer.eos_token_id)[0]
            )


@pytest.mark.parametrize("mode", [ScoringMode.CACHED, ScoringMode.REFERENCE])
def test_observe_sees_each_rows_tokens_as_generated(tiny, mode):
    """`observe` hears every token of every row, told by its place in the whole batch (also where a mixed
    batch decodes prompt by prompt), with log-probabilities that are a distribution; the EOS ends a row."""
    model, tokenizer = tiny
    embeddings = model.get_input_embeddings()
    lms = [PromptedCausalLM(model, init_prompt(n, embeddings, tokenizer, "random-uniform", seed=n)) for n in (2, 5)]
    ids, mask = _batch(tokenizer)
    heard: dict[int, list[int]] = {row: [] for row in range(3)}

    def observe(rows, chosen, logprobs):
        assert torch.allclose(logprobs.exp().sum(-1), torch.ones(len(rows)), atol=1e-4)
        for row, token in zip(rows.tolist(), chosen.tolist()):
            heard[row].append(token)

    prompts = [lms[0], lms[1], lms[0]]
    eos = lms[0].generate(ids, mask, 3, None, prompts=prompts, mode=mode)[0][2]  # so row 0 ends by its 3rd token
    generated = lms[0].generate(ids, mask, 12, eos, prompts=prompts, mode=mode, observe=observe)
    assert len(generated[0]) < 3 and heard[0][-1] == eos
    for row, tokens in enumerate(generated):
        assert heard[row][: len(tokens)] == tokens
        assert heard[row][len(tokens) :] in ([], [eos])
