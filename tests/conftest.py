"""Shared fixtures: the real default model, tiny random-weight Llama and T5 models on its real tokenizer, and
synthetic.py's tiny Llama with its own tokenizer; what several test files would otherwise each build again (a
server of the real default model, the uninterrupted run the kill-and-resume tests compare with), built once per
session."""

from __future__ import annotations

import os
import subprocess
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
    from softprompt.models.base import load_base

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
    from softprompt.models.base import load_base

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
    from softprompt.models.base import load_base

    return load_base(str(t5_dir), "float32")


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    """models/synthetic.py's tiny random Llama (2 layers, weights wide enough that what it generates depends on
    them) saved as a local HF folder with its own tokenizer: no download, not even SmolLM2's tokenizer."""
    from softprompt.models import synthetic

    return synthetic.save_folder(tmp_path_factory.mktemp("tiny-llama"), "tiny-llama")


@pytest.fixture(scope="session")
def llama(llama_dir):
    from softprompt.models.base import load_base

    return load_base(str(llama_dir), "float32")


@pytest.fixture(scope="session")
def prompts(tmp_path_factory, smollm2) -> Path:
    """serving.TASKS' prompt folders on the real default model (seeded, untrained): what the session's server
    serves (test_serve.py, test_openai_sdk.py, test_vllm.py's server beside vLLM)."""
    from .serving import write_prompts

    return write_prompts(tmp_path_factory.mktemp("smollm2-prompts"), smollm2)


@pytest.fixture(scope="session")
def smollm2_server(tmp_path_factory, prompts):
    """The URL of one `softprompt serve` of the real default model on `prompts`, for the whole session
    (test_openai_sdk.py, test_ray.py, test_serve.py): admin routes open to serving.ADMIN_TOKEN, batches waiting
    up to 20 ms. A test that uploads or deletes a task puts the served set back as it was."""
    from .serving import ADMIN_TOKEN, running_server

    token_file = tmp_path_factory.mktemp("admin") / "token"
    token_file.write_text(ADMIN_TOKEN)
    extra = ("--admin-token-file", str(token_file), "--max-wait-ms", "20")
    with running_server("smollm2-135m", prompts, *extra) as url:
        yield url


@pytest.fixture(scope="session")
def uninterrupted_run(tiny_dir, data_dir, tmp_path_factory) -> Path:
    """The folder of resuming.train_args' run, never killed: what every killed and resumed run of that recipe
    must end on, bit for bit (test_crash.py, test_train.py)."""
    from .resuming import ONE_THREAD, train_args

    output = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = subprocess.run(train_args(tiny_dir, data_dir, output), capture_output=True, text=True, timeout=300,
                          env=ONE_THREAD)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return output


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
