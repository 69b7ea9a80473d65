"""Prompt folders: PEFT 0.21 loads ours and we load PEFT's, with the same logits (real default model)."""

import json

import pytest
import torch
from peft import PeftModel, PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

from softprompt import checkpoint
from softprompt.lm import PromptedLM
from softprompt.prompt import SoftPrompt, init_prompt
from softprompt.tasks import Task
from softprompt.tuned import TunedPrompt

TASK = Task("Tweet text : {text} Label : ", "label", ["complaint", "no complaint"], name="tweets")


@pytest.fixture(scope="module")
def inputs(smollm2):
    tokenizer = smollm2[1]
    ids = tokenizer(["@united where is my bag? Label : "], return_tensors="pt", add_special_tokens=False)
    return ids["input_ids"], ids["attention_mask"]


def _our_logits(model, prompt: torch.Tensor, ids, mask) -> torch.Tensor:
    """Our logits at the text positions. The head runs over prompt + text rows, as PEFT's does: a GEMM
    over fewer rows rounds differently in float32 (about 4e-5 on logits near 18)."""
    lm = PromptedLM(model, SoftPrompt(prompt), share_prompt_cache=False)
    with torch.no_grad():
        hidden, _ = lm.hidden_states(ids, mask, with_prompt=True)
        return lm.logits(hidden)[:, lm.n_prompt :]


def test_peft_loads_our_folder_with_equal_logits(smollm2, inputs, tmp_path):
    model, tokenizer = smollm2
    prompt = init_prompt(8, model.get_input_embeddings(), tokenizer, "text", init_text="Classify the tweet:")
    with torch.no_grad():
        prompt.embedding.add_(torch.randn(prompt.embedding.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
    tuned = TunedPrompt(PromptedLM(model, prompt), tokenizer, TASK, meta={"init": "text", "init_text": "x"})
    tuned.save_pretrained(tmp_path)
    config = json.loads((tmp_path / checkpoint.CONFIG).read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 8
    peft = PeftModel.from_pretrained(model, tmp_path)
    try:
        with torch.no_grad():
            theirs = peft(input_ids=inputs[0], attention_mask=inputs[1]).logits[:, 8:]
    finally:
        peft.unload() if hasattr(peft, "unload") else None
    ours = _our_logits(model, prompt.embedding.detach(), *inputs)
    assert theirs.shape == ours.shape
    assert (theirs - ours).abs().max() < 1e-5


def test_we_load_a_peft_folder_with_equal_logits(smollm2, inputs, tmp_path):
    model, tokenizer = smollm2
    config = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        prompt_tuning_init=PromptTuningInit.TEXT,
        num_virtual_tokens=8,
        prompt_tuning_init_text="Classify if the tweet is a complaint or not:",
        tokenizer_name_or_path=str(tmp_path),
    )
    tokenizer.save_pretrained(tmp_path)  # PEFT's TEXT init reads the tokenizer from a path
    peft = get_peft_model(model, config)
    with torch.no_grad():
        embedding = peft.prompt_encoder["default"].embedding.weight
        embedding.add_(torch.randn(embedding.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
        theirs = peft(input_ids=inputs[0], attention_mask=inputs[1]).logits[:, 8:]
    folder = tmp_path / "peft-prompt"
    peft.save_pretrained(folder)
    tuned = TunedPrompt.from_pretrained(folder, base=(model, tokenizer), task=TASK)
    assert torch.equal(tuned.lm.prompt.embedding.detach(), embedding.detach().float())
    ours = _our_logits(model, tuned.lm.prompt.embedding.detach(), *inputs)
    assert (theirs - ours).abs().max() < 1e-5
