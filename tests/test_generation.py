"""Decoding for text-to-text tasks (engine/decoding.py, prompts/generation.py): the loop's ends (EOS, a stop token,
max_new_tokens), a newline stop on the real default model, seeded nucleus sampling, mixed prompts with stop ids,
and a trained text prompt's folder generating under PEFT exactly what it generates here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from softprompt.data.batching import pad_left
from softprompt.data.tasks import Task
from softprompt.engine.decoding import decode
from softprompt.models.base import Base
from softprompt.models.prompt import SoftPrompt, init_prompt
from softprompt.prompts.generation import generate_texts
from softprompt.prompts.tuned import TunedPrompt
from softprompt.training.train import fit

from .test_device import NoImplicitDevice
from .texts import MAX_NEW_TOKENS, TEMPLATE, corpus_rows, qa_rows, text_config, write_jsonl

TASK = Task(TEMPLATE, target_field="answer", max_new_tokens=MAX_NEW_TOKENS, stop=[])
EOS, NEWLINE = 1, 9  # ids of the scripted decodes below


def _tuned(base, seed: int = 0, n_tokens: int = 4, task: Task = TASK) -> TunedPrompt:
    model, tokenizer = base
    prompt = init_prompt(n_tokens, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=seed)
    return TunedPrompt.build(Base(model, tokenizer), prompt, task)


def _batch(tuned: TunedPrompt, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_left([tuned.encoder.input_ids(row) for row in rows], tuned.tokenizer.pad_token_id, device="cpu")


def _scripted(script: list[list[int]], vocab: int = 16):
    """A decoding step whose greedy pick at step j for row i is script[i][j]; and the `last` ids it was fed."""
    fed: list[torch.Tensor | None] = []

    def step(last: torch.Tensor | None) -> torch.Tensor:
        fed.append(last)
        logits = torch.zeros(len(script), vocab)
        for row, tokens in enumerate(script):
            logits[row, tokens[len(fed) - 1]] = 1.0
        return logits

    return step, fed


def test_decoding_ends_a_row_at_eos_or_after_its_stop_token_and_stops_when_every_row_has():
    script = [[5, 6, EOS, 7, 7], [5, NEWLINE, 8, 8, 8], [4, 4, 4, 4, 4]]
    step, fed = _scripted(script)
    assert decode(step, 3, 5, EOS, stop_ids=[NEWLINE]) == [[5, 6], [5, NEWLINE], [4, 4, 4, 4, 4]]
    assert len(fed) == 5  # row 3 ran to max_new_tokens
    assert fed[3].tolist() == [EOS, EOS, 4] and fed[4].tolist() == [EOS, EOS, 4]  # ended rows are fed EOS
    step, _ = _scripted(script)
    assert decode(step, 3, 5, EOS) == [[5, 6], [5, NEWLINE, 8, 8, 8], [4, 4, 4, 4, 4]]  # no stop ids: a token
    step, fed = _scripted([[5, EOS, 7, 7], [NEWLINE, 3, 3, 3]])
    assert decode(step, 2, 4, EOS, stop_ids=[NEWLINE]) == [[5], [NEWLINE]] and len(fed) == 2
    step, _ = _scripted(script)
    assert decode(step, 3, 2, EOS, stop_ids=[NEWLINE]) == [[5, 6], [5, NEWLINE], [4, 4]]


@pytest.mark.slow
def test_a_newline_stop_gives_the_unstopped_tokens_cut_after_the_newline_real_model(smollm2, monkeypatch):
    """The plain model (a prompt of no tokens) answering short questions writes a newline, then more; with
    stop=["\\n"] its tokens end at the first token holding a newline and its text is what came before."""
    model, tokenizer = smollm2
    task = Task("Question: {q}\nAnswer:", target_field="a", max_new_tokens=12, stop=[])
    questions = ["How many legs does a spider have?", "Who wrote Hamlet?", "What colour is the sky?",
                 "Which planet is the largest?"]  # fmt: skip
    rows = [{"q": q} for q in questions]
    empty = SoftPrompt.frozen(torch.zeros(0, model.config.hidden_size))
    free = TunedPrompt.build(Base(model, tokenizer), empty, task)
    stopped = TunedPrompt.build(Base(model, tokenizer), empty, dataclasses.replace(task, stop=["\n"]))
    stop_ids = set(stopped.encoder.stop_ids)
    assert tokenizer.convert_tokens_to_ids("Ċ") in stop_ids and len(stop_ids) > 1  # "\n", and tokens holding one
    ids, mask = _batch(free, rows)
    unstopped = free.lm.generate(ids, mask, 12, tokenizer.eos_token_id)
    made = _spied(stopped, monkeypatch)
    texts = generate_texts(stopped.lm, stopped.encoder, rows, batch_size=1)
    cut = [made[tuple(stopped.encoder.input_ids(row))] for row in rows]
    assert any("\n" in tokenizer.decode(tokens).strip() for tokens in unstopped)  # there is a newline to stop at
    for free_tokens, cut_tokens, text in zip(unstopped, cut, texts, strict=True):
        free_text = tokenizer.decode(free_tokens, skip_special_tokens=True)
        assert free_tokens[: len(cut_tokens)] == cut_tokens
        if "\n" in free_text:
            assert cut_tokens[-1] in stop_ids and not stop_ids & set(cut_tokens[:-1])
            assert len(cut_tokens) < len(free_tokens)
        else:
            assert cut_tokens == free_tokens
        assert text == free_text.split("\n", 1)[0].strip()


def _spied(tuned: TunedPrompt, monkeypatch) -> dict[tuple[int, ...], list[int]]:
    """What `tuned.lm.generate` returns from now on, by the unpadded input ids of each row."""
    made: dict[tuple[int, ...], list[int]] = {}
    generate = tuned.lm.generate

    def spy(input_ids, attention_mask, *args, **kwargs):
        out = generate(input_ids, attention_mask, *args, **kwargs)
        for row, real, tokens in zip(input_ids.tolist(), attention_mask.tolist(), out, strict=True):
            made[tuple(i for i, keep in zip(row, real) if keep)] = tokens
        return out

    monkeypatch.setattr(tuned.lm, "generate", spy)
    return made


def test_nucleus_sampling_with_a_seed_gives_the_same_texts_and_another_seed_others(llama):
    tuned, rows = _tuned(llama), corpus_rows(8)

    def sample(seed: int, top_p: float = 0.9) -> list[str]:
        return generate_texts(tuned.lm, tuned.encoder, rows, batch_size=3, temperature=1.0, top_p=top_p, seed=seed)

    first = sample(1)
    assert sample(1) == first
    assert sample(2) != first
    # A nucleus too small for a second token holds the most likely one alone: greedy decoding.
    assert sample(3, top_p=1e-9) == generate_texts(tuned.lm, tuned.encoder, rows, batch_size=3)


def test_no_output_is_longer_than_the_tasks_max_new_tokens(llama, monkeypatch):
    rows = corpus_rows(8)
    for budget in (3, 7):
        tuned = _tuned(llama, task=dataclasses.replace(TASK, max_new_tokens=budget))
        made = _spied(tuned, monkeypatch)
        texts = generate_texts(tuned.lm, tuned.encoder, rows, batch_size=3)
        tokens = [made[tuple(tuned.encoder.input_ids(row))] for row in rows]
        assert max(map(len, tokens)) == budget  # the budget binds, and holds
        assert texts == [tuned.encoder.finish(row_tokens) for row_tokens in tokens]


def test_mixed_prompts_in_one_batch_with_stop_ids_give_each_rows_own_tokens(llama):
    a, b = _tuned(llama, seed=1, n_tokens=5), _tuned(llama, seed=2, n_tokens=2)
    rows, owners = corpus_rows(6), [a, b, b, a, b, a]
    ids, mask = _batch(a, rows)
    eos = llama.tokenizer.eos_token_id
    free = a.lm.generate(ids, mask, MAX_NEW_TOKENS, eos, prompts=[t.lm for t in owners])
    stop_ids = [free[0][2], free[1][1]]  # tokens two of the rows would write: the stops take effect
    mixed = a.lm.generate(ids, mask, MAX_NEW_TOKENS, eos, prompts=[t.lm for t in owners], stop_ids=stop_ids)
    for row, owner, tokens in zip(rows, owners, mixed, strict=True):
        alone = owner.encoder.input_ids(row)
        single = torch.tensor([alone]), torch.ones(1, len(alone), dtype=torch.long)
        assert tokens == owner.lm.generate(*single, MAX_NEW_TOKENS, eos, stop_ids=stop_ids)[0]
    assert len(mixed[0]) <= 3 and len(mixed[1]) <= 2 and mixed[0][-1] in stop_ids


def test_decoding_with_an_eos_makes_every_tensor_on_the_models_device(llama):
    tuned = _tuned(llama, task=dataclasses.replace(TASK, stop=["\n"]))
    with NoImplicitDevice():
        texts = generate_texts(tuned.lm, tuned.encoder, corpus_rows(3))
    assert len(texts) == 3


# --- PEFT loads a trained text prompt and generates what we generate ------------------------------------------------


@pytest.fixture(scope="module")
def trained_folder(llama, llama_dir, tmp_path_factory) -> Path:
    """A text-to-text prompt trained 3 steps (float32) on the tiny Llama, saved as a PEFT folder."""
    root = tmp_path_factory.mktemp("peft-text")
    config = text_config(llama_dir, write_jsonl(root / "qa.jsonl", qa_rows(12)), root / "run", max_steps=3)
    fit(config, base=llama)
    return root / "run"


def _peft_greedy(peft, ids: list[int], eos: int, pad: int, use_cache: bool) -> list[int]:
    """PEFT's greedy tokens after `ids` (one row: no padding), up to its EOS (left out, as ours leave it)."""
    out = peft.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                        max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=eos, pad_token_id=pad,
                        use_cache=use_cache)[0, len(ids) :].tolist()  # fmt: skip
    return out[: out.index(eos)] if eos in out else out


def _peft_and_ours(folder: Path, base, model_dir: Path, use_cache: bool):
    """Our prompt of `folder` on `base`; its 20 rows; PEFT's greedy tokens for each, on a fresh copy of the model."""
    tuned = TunedPrompt.from_pretrained(folder, base=base)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    peft = PeftModel.from_pretrained(model, folder)
    rows = corpus_rows(20)
    tokenizer = tuned.tokenizer
    with torch.no_grad():
        theirs = [_peft_greedy(peft, tuned.encoder.input_ids(row), tokenizer.eos_token_id, tokenizer.pad_token_id,
                               use_cache) for row in rows]  # fmt: skip
    return tuned, rows, theirs


def test_peft_generates_our_trained_text_prompts_tokens_token_for_token(trained_folder, llama,
                                                                        llama_dir):  # fmt: skip
    """Our batch of 20 left-padded rows of different lengths (stopping at EOS only, as PEFT does) against PEFT's
    greedy `generate` row by row; and our predictions (cut at the task's newline) against PEFT's tokens finished
    the same way. PEFT decodes without its cache here: see the test below."""
    tuned, rows, theirs = _peft_and_ours(trained_folder, llama, llama_dir, use_cache=False)
    ids, mask = _batch(tuned, rows)
    assert mask.sum(1).unique().numel() > 5  # rows of many lengths: real left padding
    ours = tuned.lm.generate(ids, mask, MAX_NEW_TOKENS, tuned.tokenizer.eos_token_id)
    assert ours == theirs
    assert len({tuple(tokens) for tokens in ours}) > 10 and max(map(len, ours)) == MAX_NEW_TOKENS
    assert [p["prediction"] for p in tuned.predict(rows)] == [tuned.encoder.finish(tokens) for tokens in theirs]


@pytest.mark.xfail(
    strict=True,
    reason="PEFT 0.21.2 under transformers 5.24 (not ours): PEFT's prepare_inputs_for_generation looks for "
    "`past_key_values`, which transformers 5 passes as `cache`, so with the cache on it injects the virtual "
    "tokens again at every decoding step (the model sees 4 + 1 embeddings per step) and drifts from the model's "
    "own greedy continuation, which ours, transformers' generate on inputs_embeds and PEFT uncached all give",
)
def test_peft_with_its_cache_generates_our_tokens(trained_folder, llama, llama_dir):
    tuned, rows, theirs = _peft_and_ours(trained_folder, llama, llama_dir, use_cache=True)
    ids, mask = _batch(tuned, rows)
    assert tuned.lm.generate(ids, mask, MAX_NEW_TOKENS, tuned.tokenizer.eos_token_id) == theirs
