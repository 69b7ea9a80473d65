"""Each initialiser's defining property, on the real default model's embeddings and tokenizer."""

import pytest
import torch

from softprompt.models.prompt import COMMON_VOCAB, init_prompt, ordinary_token_ids
from softprompt.utils.errors import SoftpromptError


@pytest.fixture(scope="module")
def parts(smollm2):
    model, tokenizer = smollm2
    return model.get_input_embeddings(), tokenizer


def _row_ids(matrix: torch.Tensor, table: torch.Tensor) -> list[int]:
    """For each prompt row, the id of the embedding row it equals exactly (or -1)."""
    hits = []
    for row in matrix:
        equal = (table == row).all(1).nonzero()
        hits.append(int(equal[0]) if len(equal) else -1)
    return hits


def test_random_uniform_range_and_seed(parts):
    embeddings, tokenizer = parts
    a = init_prompt(20, embeddings, tokenizer, "random-uniform", seed=1, init_range=0.25).embedding
    b = init_prompt(20, embeddings, tokenizer, "random-uniform", seed=1, init_range=0.25).embedding
    c = init_prompt(20, embeddings, tokenizer, "random-uniform", seed=2, init_range=0.25).embedding
    assert a.dtype == torch.float32 and a.shape == (20, embeddings.embedding_dim)
    assert a.abs().max() <= 0.25 and a.abs().max() > 0.2
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_first_vocab_rows_are_the_first_embeddings(parts):
    embeddings, tokenizer = parts
    prompt = init_prompt(6, embeddings, tokenizer, "first-vocab").embedding
    assert torch.equal(prompt, embeddings.weight[:6].float())


def test_sampled_vocab_rows_are_common_ordinary_tokens(parts):
    embeddings, tokenizer = parts
    pool = ordinary_token_ids(tokenizer, embeddings.num_embeddings)
    assert len(pool) == COMMON_VOCAB
    assert not set(pool.tolist()) & set(tokenizer.all_special_ids)
    prompt = init_prompt(100, embeddings, tokenizer, "sampled-vocab", seed=3).embedding
    ids = _row_ids(prompt, embeddings.weight.float())
    assert -1 not in ids
    assert set(ids) <= set(pool.tolist())
    assert not set(ids) & set(tokenizer.all_special_ids)
    assert len(set(ids)) == 100  # drawn without replacement


def test_text_init_repeats_the_text_tokens_without_specials(parts):
    embeddings, tokenizer = parts
    text = "Classify if the tweet is a complaint or not:"
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    prompt = init_prompt(len(tokens) * 2 + 1, embeddings, tokenizer, "text", init_text=text).embedding
    expected = (tokens * 3)[: len(tokens) * 2 + 1]
    assert torch.equal(prompt, embeddings.weight[expected].float())
    short = init_prompt(3, embeddings, tokenizer, "text", init_text=text).embedding
    assert torch.equal(short, embeddings.weight[tokens[:3]].float())


def test_class_label_rows_are_label_word_embeddings(parts):
    embeddings, tokenizer = parts
    words = ["complaint", "no complaint"]
    prompt = init_prompt(5, embeddings, tokenizer, "class-label", label_words=words, seed=0).embedding
    for row, word in zip(prompt, words):
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        assert torch.allclose(row, embeddings.weight[ids].float().mean(0))
    assert len(tokenizer("no complaint", add_special_tokens=False)["input_ids"]) > 1  # the average is exercised
    pool = set(ordinary_token_ids(tokenizer, embeddings.num_embeddings).tolist())
    assert set(_row_ids(prompt[2:], embeddings.weight.float())) <= pool


def test_bad_init_is_a_clear_error(parts):
    embeddings, tokenizer = parts
    with pytest.raises(SoftpromptError, match="^init: must be one of"):
        init_prompt(4, embeddings, tokenizer, "zeros")
    with pytest.raises(SoftpromptError, match="^init_text"):
        init_prompt(4, embeddings, tokenizer, "text")
