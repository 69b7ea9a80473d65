"""Shared fixtures: the real default model, and tiny random-weight Llama and T5 models on its real tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

DATA = Path(os.environ.get("SOFTPROMPT_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
os.environ.setdefault("SOFTPROMPT_DATA", str(DATA))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert (DATA / "README.md").is_file(), f"the shared data sets are expected at {DATA}"
    return DATA


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded default model, loaded once per test session (frozen, float32)."""
    from softprompt.models import load_base

    return load_base("smollm2-135m", "float32")


def _saved(folder: Path, model, tokenizer) -> Path:
    """`folder` as a Hugging Face model folder: a random-weight `model` with the real tokenizer."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, smollm2) -> Path:
    """A 2-layer random-weight Llama saved as a local HF folder, with SmolLM2's real tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = smollm2[1]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    return _saved(tmp_path_factory.mktemp("tiny-llama"), LlamaForCausalLM(config), tokenizer)


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    from softprompt.models import load_base

    return load_base(str(tiny_dir), "float32")


@pytest.fixture(scope="session")
def t5_dir(tmp_path_factory, smollm2) -> Path:
    """A 2-layer random-weight T5 (encoder-decoder) saved as a local HF folder, with SmolLM2's tokenizer."""
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = smollm2[1]
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id)  # fmt: skip
    return _saved(tmp_path_factory.mktemp("tiny-t5"), T5ForConditionalGeneration(config), tokenizer)


@pytest.fixture(scope="session")
def t5(t5_dir):
    from softprompt.models import load_base

    return load_base(str(t5_dir), "float32")


@pytest.fixture()
def csv_file(tmp_path):
    """Write rows (first row = header) to a CSV file and return its path."""
    import csv

    def write(rows, name="data.csv"):
        path = tmp_path / name
        with open(path, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(rows)
        return path

    return write
