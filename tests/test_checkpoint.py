"""Prompt folders: PEFT 0.21 loads ours and we load PEFT's, with the same logits (real default model)."""

import json

import pytest
import torch
from peft import PeftModel, PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
from safetensors import SafetensorError

from softprompt.data.tasks import Task
from softprompt.engine.causal import PromptedCausalLM
from softprompt.engine.prompted import ScoringMode
from softprompt.models.base import Base
from softprompt.models.prompt import SoftPrompt, init_prompt
from softprompt.prompts import checkpoint
from softprompt.prompts.record import FolderRecord
from softprompt.prompts.tuned import TunedPrompt
from softprompt.utils.errors import SoftpromptError

TASK = Task("Tweet text : {text} Label : ", "label", ["complaint", "no complaint"], name="tweets")


@pytest.fixture(scope="module")
def inputs(smollm2):
    tokenizer = smollm2[1]
    ids = tokenizer(["@united where is my bag? Label : "], return_tensors="pt", add_special_tokens=False)
    return ids["input_ids"], ids["attention_mask"]


def _our_logits(model, prompt: torch.Tensor, ids, mask) -> torch.Tensor:
    """Our logits at the text positions. The head runs over prompt + text rows, as PEFT's does: a GEMM
    over fewer rows rounds differently in float32 (about 4e-5 on logits near 18)."""
    lm = PromptedCausalLM(model, SoftPrompt(prompt), ScoringMode.REFERENCE)
    with torch.no_grad():
        hidden, _ = lm.hidden_states(ids, mask, with_prompt=True)
        return lm.logits(hidden)[:, lm.n_prompt :]


def test_peft_loads_our_folder_with_equal_logits(smollm2, inputs, tmp_path):
    model, tokenizer = smollm2
    prompt = init_prompt(8, model.get_input_embeddings(), tokenizer, "text", init_text="Classify the tweet:")
    with torch.no_grad():
        prompt.embedding.add_(torch.randn(prompt.embedding.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
    tuned = TunedPrompt.build(Base(model, tokenizer), prompt, TASK, record=FolderRecord(init="text", init_text="x"))
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
    tuned = TunedPrompt.from_pretrained(folder, base=Base(model, tokenizer), task=TASK)
    assert torch.equal(tuned.lm.prompt.embedding.detach(), embedding.detach().float())
    ours = _our_logits(model, tuned.lm.prompt.embedding.detach(), *inputs)
    assert (theirs - ours).abs().max() < 1e-5


def test_a_failing_disk_leaves_the_previous_prompt_and_checkpoint_whole(tmp_path, monkeypatch):
    """A write that fails part-way (disk full) keeps the old files and leaves no temp files behind."""
    import errno

    old = torch.arange(12, dtype=torch.float32).view(3, 4)
    checkpoint.save_prompt(tmp_path, old, {"num_virtual_tokens": 3})
    FolderRecord(task=TASK).write(tmp_path)
    checkpoint.save_checkpoint(tmp_path / "checkpoints", 1, {"training_state.json": b"{}"})

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save_prompt(tmp_path, old + 1, {"num_virtual_tokens": 3})
    with pytest.raises(SoftpromptError, match="step-00000002: cannot write this checkpoint .*No space"):
        checkpoint.save_checkpoint(tmp_path / "checkpoints", 2, {"training_state.json": b"{}"})
    monkeypatch.undo()

    def full_disk_in_safetensors(tensors, path):  # safetensors' own error: it writes tensors straight to the file
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full_disk_in_safetensors)
    with pytest.raises(SoftpromptError, match="cannot write this checkpoint .*No space"):
        checkpoint.save_checkpoint(tmp_path / "checkpoints", 2, {"training_state.safetensors": {"x": old}})
    monkeypatch.undo()
    prompt, config = checkpoint.load_prompt(tmp_path)
    assert torch.equal(prompt, old) and config["num_virtual_tokens"] == 3
    assert checkpoint.latest_checkpoint(tmp_path / "checkpoints").name == "step-00000001"
    leftovers = [p.name for p in tmp_path.rglob(".*")]
    assert leftovers == []


HOSTILE = {
    "truncated safetensors": (lambda f: _truncate(f / checkpoint.WEIGHTS), "not a valid safetensors file"),
    "integer dtype": (lambda f: _weights(f, torch.zeros(4, 8, dtype=torch.int32)), "2-D float matrix"),
    "NaN values": (lambda f: _weights(f, torch.full((4, 8), float("nan"))), "NaN or Inf"),
    "Inf values": (lambda f: _weights(f, torch.full((4, 8), float("inf"))), "NaN or Inf"),
    "wrong shape": (lambda f: _weights(f, torch.zeros(2, 8)), "2 rows but num_virtual_tokens is 4"),
    "3-D tensor": (lambda f: _weights(f, torch.zeros(4, 8, 1)), "2-D float matrix"),
    "only unknown keys": (lambda f: _weights(f, None, {"something_else": torch.zeros(4, 8)}), "no 'prompt_embeddings'"),
    "pickle only": (lambda f: ((f / checkpoint.WEIGHTS).unlink(), torch.save({}, f / "adapter_model.bin")), "pickle"),
    "symlink out": (lambda f: _symlink_out(f), "symlink out of the prompt folder"),
    "not a prompt-tuning adapter": (lambda f: _config(f, {"peft_type": "LORA"}), "is not PROMPT_TUNING"),
    "config not JSON": (lambda f: (f / checkpoint.CONFIG).write_text("{nope"), "unreadable JSON"),
}  # fmt: skip


def _truncate(path):
    path.write_bytes(path.read_bytes()[:40])


def _weights(folder, tensor, extra=None):
    from safetensors.torch import save_file

    tensors = dict(extra or {})
    if tensor is not None:
        tensors["prompt_embeddings"] = tensor
    save_file(tensors, str(folder / checkpoint.WEIGHTS))


def _config(folder, changes):
    config = json.loads((folder / checkpoint.CONFIG).read_text())
    (folder / checkpoint.CONFIG).write_text(json.dumps({**config, **changes}))


def _symlink_out(folder):
    outside = folder.parent / "elsewhere.safetensors"
    outside.write_bytes((folder / checkpoint.WEIGHTS).read_bytes())
    (folder / checkpoint.WEIGHTS).unlink()
    (folder / checkpoint.WEIGHTS).symlink_to(outside)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_prompt_folders_are_refused_with_one_line(tmp_path, case):
    from softprompt.utils.errors import SoftpromptError

    folder = tmp_path / "prompt"
    checkpoint.save_prompt(folder, torch.zeros(4, 8), {"num_virtual_tokens": 4, "peft_type": "PROMPT_TUNING"})
    FolderRecord(task=TASK).write(folder)
    spoil, message = HOSTILE[case]
    spoil(folder)
    with pytest.raises(SoftpromptError, match=message) as error:
        checkpoint.load_prompt(folder)
    assert "\n" not in str(error.value) and str(folder) in str(error.value)


def test_extra_tensors_and_half_precision_are_accepted(tmp_path):
    folder = tmp_path / "prompt"
    checkpoint.save_prompt(folder, torch.zeros(4, 8), {"num_virtual_tokens": 4})
    _weights(folder, torch.ones(4, 8, dtype=torch.float16), {"extra": torch.zeros(1)})
    prompt, _ = checkpoint.load_prompt(folder)
    assert prompt.dtype == torch.float32 and torch.equal(prompt, torch.ones(4, 8))


def test_a_prompt_for_another_base_model_warns_offline_and_is_refused_by_the_server(tiny, tmp_path):
    from softprompt.serve.store import PromptStore
    from softprompt.utils.errors import SoftpromptError

    model, tokenizer = tiny
    prompt = init_prompt(4, model.get_input_embeddings(), tokenizer, "random-uniform")
    folder = tmp_path / "prompts" / "tweets"
    TunedPrompt.build(Base(model, tokenizer), prompt, TASK).save_pretrained(folder)
    meta = json.loads((folder / checkpoint.META).read_text())
    meta["base_model"] = "some-other-model"
    (folder / checkpoint.META).write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="trained on 'some-other-model'"):
        TunedPrompt.from_pretrained(folder, base=tiny, model=model.name_or_path)
    store = PromptStore(tiny, tmp_path / "prompts")
    with pytest.raises(SoftpromptError, match="trained on 'some-other-model', this server runs"):
        store.load_all()
