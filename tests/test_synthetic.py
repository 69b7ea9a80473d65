"""synthetic.py: a tokenizer that gives the same ids everywhere and round-trips any text, tiny random-weight
models that load and score through the ordinary path, and the real configs at their released sizes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from softprompt.data.tasks import Task
from softprompt.models import synthetic
from softprompt.models.base import Base, load_base
from softprompt.models.prompt import init_prompt
from softprompt.prompts.tuned import TunedPrompt

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"
TASK = Task("Tweet text : {text} Label : ", "label", ["complaint", "no complaint"])
# What this tokenizer gives today; a change means every machine's tokenizer may differ from every other's.
SENTENCE = "Tweet text : @united lost my bag again Label : complaint"
SENTENCE_IDS = [426, 382, 301, 224, 35, 291, 282, 274, 924, 742, 763, 262, 74, 293, 364, 301, 380]
VOCAB_SHA256 = "d03cacd8af28df993c9e777b7bb1c2dbe1cea67c51ff4a42f56c2565fda80f1b"
# name: (parameters, parameters less the embeddings, as Hugging Face and Qwen report them), within 1%
RELEASED = {"smollm2-135m": (134.5e6, 106.2e6), "qwen2.5-1.5b": (1.54e9, 1.31e9), "qwen2.5-7b": (7.61e9, 6.53e9)}


def _vocab_digest(tokenizer) -> str:
    return hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()


def test_the_tokenizer_gives_the_same_ids_on_every_call_and_machine():
    first = synthetic.tokenizer()
    synthetic._tokenizer_json.cache_clear()  # train it again
    second = synthetic.tokenizer()
    assert first(SENTENCE)["input_ids"] == second(SENTENCE)["input_ids"] == SENTENCE_IDS
    assert _vocab_digest(first) == _vocab_digest(second) == VOCAB_SHA256


@pytest.mark.parametrize(
    "text", ["", "plain words", "  leading and trailing  ", "tabs\tand\nnewlines", "émoji 😡 and 中文", "\x00\x7f"]
)
def test_the_tokenizer_round_trips_any_text(text):
    tokenizer = synthetic.tokenizer()
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert all(0 <= i < synthetic.VOCAB_SIZE for i in ids)


def test_the_tokenizer_has_its_special_tokens_and_ids_valid_in_every_config():
    tokenizer = synthetic.tokenizer()
    assert len(tokenizer) == synthetic.VOCAB_SIZE
    special = [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id, tokenizer.pad_token_id]
    assert sorted(special) == [0, 1, 2, 3]
    assert tokenizer("no special tokens are added")["input_ids"][0] not in special
    assert min(kwargs["vocab_size"] for kwargs in synthetic.CONFIGS.values()) >= len(tokenizer)


def test_a_changed_tokenizer_leaves_the_next_one_alone():
    synthetic.tokenizer().pad_token = "</s>"
    assert synthetic.tokenizer().pad_token == "<pad>"


@pytest.mark.parametrize("name", synthetic.TINY)
def test_a_tiny_model_is_frozen_in_eval_mode_and_its_seed_fixes_its_weights(name):
    model = synthetic.random_model(name, seed=3)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    again, other = synthetic.random_model(name, seed=3), synthetic.random_model(name, seed=4)
    pairs = list(zip(model.state_dict().values(), again.state_dict().values(), other.state_dict().values()))
    assert all(torch.equal(a, b) for a, b, _ in pairs)
    assert not all(torch.equal(a, c) for a, _, c in pairs)
    assert model.config.eos_token_id == synthetic.tokenizer().eos_token_id


def _greedy(model, ids: torch.Tensor, tokens: int = 8) -> list[int]:
    """transformers' own greedy tokens after `ids` (a T5 gives its decoder's, after the start token)."""
    out = model.generate(ids, max_new_tokens=tokens, do_sample=False, pad_token_id=3)[0]
    return out[1 if model.config.is_encoder_decoder else ids.shape[1] :].tolist()


@pytest.mark.parametrize("name", synthetic.TINY)
def test_what_a_tiny_model_generates_depends_on_its_weights(name):
    # Else a device test of generation would pass on any weights.
    ids = torch.tensor([synthetic.tokenizer()(SENTENCE)["input_ids"]])
    made = [_greedy(synthetic.random_model(name, seed=seed), ids) for seed in (0, 1)]
    assert made[0] != made[1]
    assert len(set(made[0])) > 2  # not one token repeated


@pytest.mark.parametrize("name", synthetic.TINY)
def test_a_saved_folder_loads_through_load_base_and_scores(tmp_path, name):
    folder = synthetic.save_folder(tmp_path / name, name, seed=1)
    model, tokenizer = load_base(str(folder), "float32", device="cpu")
    made = synthetic.random_model(name, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), made.state_dict().values()))
    assert tokenizer(SENTENCE)["input_ids"] == SENTENCE_IDS
    prompt = init_prompt(4, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=1)
    tuned = TunedPrompt.build(Base(model, tokenizer), prompt, TASK)
    predictions = tuned.predict([{"text": "lost my bag"}, {"text": "a lovely flight"}])
    assert all(p["label"] in TASK.labels for p in predictions)
    assert all(torch.isfinite(torch.tensor(list(p["scores"].values()))).all() for p in predictions)


@pytest.mark.parametrize("name", RELEASED)
def test_a_real_config_has_its_released_parameter_count(name):
    model = synthetic.random_model(name, dtype=torch.bfloat16, device="meta")  # shapes only: nothing allocated
    total, blocks = RELEASED[name]
    assert synthetic.parameter_count(model) == pytest.approx(total, rel=0.01)
    assert synthetic.parameter_count(model, embeddings=False) == pytest.approx(blocks, rel=0.01)
    assert model.config.rope_parameters["rope_theta"] == (1e5 if name == "smollm2-135m" else 1e6)
    assert not getattr(model.config, "sliding_window", None)  # as released: full attention in every layer


def test_an_unknown_model_name_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="no synthetic model 'gpt5'; one of smollm2-135m, .*tiny-t5"):
        synthetic.config("gpt5")


def test_the_package_and_the_gpu_bench_import_without_gguf_fastapi_or_uvicorn():
    # The GPU machine has none of them: a module set to None in sys.modules fails to import.
    code = (
        "import importlib.util, sys\n"
        "for name in ('gguf', 'fastapi', 'uvicorn'): sys.modules[name] = None\n"
        "import softprompt, softprompt.models.synthetic, softprompt.training.train, softprompt.serve.batcher\n"
        f"spec = importlib.util.spec_from_file_location('gpu_bench', {str(BENCH)!r})\n"
        "sys.modules['gpu_bench'] = module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
