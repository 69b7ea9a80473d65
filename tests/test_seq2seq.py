"""Encoder-decoder (T5) prompts on tiny random-weight configs: PEFT's SEQ_2_SEQ_LM layout both ways with equal
logits, cached greedy decoding equal to recompute, and training through the same loop."""

from __future__ import annotations

import json

import torch
from peft import PeftModel, PromptTuningConfig, TaskType, get_peft_model
from safetensors.torch import load_file

from softprompt.data.batching import pad_left, pad_right
from softprompt.data.tasks import Task
from softprompt.engine.prompted import ScoringMode
from softprompt.engine.seq2seq import PromptedSeq2SeqLM
from softprompt.models.base import Base
from softprompt.models.prompt import init_prompt
from softprompt.prompts import checkpoint
from softprompt.prompts.record import FolderRecord
from softprompt.prompts.tuned import TunedPrompt
from softprompt.training.train import TrainConfig, fit

TASK = Task("Tweet text : {Tweet text} Label : ", "Label", ["complaint", "no complaint"])
TEXTS = ["@united lost my bag", "thanks for the lovely flight, great crew and a smooth landing", "delayed again"]


def _inputs(tokenizer, left: bool = False):
    """Right-padded, as T5 tokenizers pad (PEFT feeds what it gets); our path takes either padding."""
    pad = pad_left if left else pad_right
    return pad([tokenizer(t)["input_ids"] for t in TEXTS], tokenizer.pad_token_id, device="cpu")


def _our_logits(lm: PromptedSeq2SeqLM, ids, mask, decoder_ids) -> torch.Tensor:
    with torch.no_grad():
        states, full_mask = lm.encode(ids, mask)
        return lm.model(encoder_outputs=(states,), attention_mask=full_mask, decoder_input_ids=decoder_ids).logits


def _prompt(t5, seed=3) -> TunedPrompt:
    model, tokenizer = t5
    prompt = init_prompt(4, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=seed)
    return TunedPrompt.build(Base(model, tokenizer), prompt, TASK, record=FolderRecord(init="sampled-vocab"))


def test_peft_loads_our_seq2seq_folder_with_equal_logits(t5, tmp_path):
    model, tokenizer = t5
    tuned = _prompt(t5)
    tuned.save_pretrained(tmp_path)
    config = json.loads((tmp_path / checkpoint.CONFIG).read_text())
    assert config["task_type"] == "SEQ_2_SEQ_LM" and config["num_transformer_submodules"] == 2
    assert load_file(str(tmp_path / checkpoint.WEIGHTS))["prompt_embeddings"].shape == (8, 32)
    ids, mask = _inputs(tokenizer)
    decoder_ids = torch.tensor([[tokenizer.pad_token_id, 5, 6]] * len(TEXTS))
    peft = PeftModel.from_pretrained(model, tmp_path)
    with torch.no_grad():
        theirs = peft(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
    ours = _our_logits(tuned.lm, ids, mask, decoder_ids)
    assert (theirs - ours).abs().max() < 1e-5


def test_we_load_a_peft_seq2seq_folder_with_equal_logits(t5, tmp_path):
    model, tokenizer = t5
    peft = get_peft_model(model, PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=4))
    ids, mask = _inputs(tokenizer)
    decoder_ids = torch.tensor([[tokenizer.pad_token_id, 7]] * len(TEXTS))
    with torch.no_grad():
        weight = peft.prompt_encoder["default"].embedding.weight
        assert weight.shape == (8, 32)
        weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(2)))
        theirs = peft(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
    peft.save_pretrained(tmp_path / "peft")
    tuned = TunedPrompt.from_pretrained(tmp_path / "peft", base=t5, task=TASK)
    assert isinstance(tuned.lm, PromptedSeq2SeqLM)
    assert torch.equal(tuned.lm.prompt.embedding.detach(), weight[:4].detach())  # the first N rows
    assert (theirs - _our_logits(tuned.lm, ids, mask, decoder_ids)).abs().max() < 1e-5


def test_seq2seq_cached_greedy_equals_recompute(t5):
    tuned = _prompt(t5, seed=5)
    ids, mask = _inputs(tuned.tokenizer, left=True)
    cached = tuned.lm.generate(ids, mask, 10, None)
    assert cached == tuned.lm.generate(*_inputs(tuned.tokenizer), 10, None)  # padding side changes nothing
    assert cached == tuned.lm.generate(ids, mask, 10, None, mode=ScoringMode.REFERENCE)
    assert all(len(row) == 10 for row in cached)


def test_seq2seq_scores_and_training(t5, t5_dir, data_dir, tmp_path):
    tuned = _prompt(t5, seed=7)
    rows = [{"Tweet text": t} for t in TEXTS]
    ids, mask = pad_left([tuned.encoder.input_ids(r) for r in rows], tuned.tokenizer.pad_token_id, device="cpu")
    labels = tuned.encoder.label_ids
    with torch.no_grad():
        scores = torch.stack(tuned.lm.continuation_logprobs(ids, mask, [labels] * len(rows)))
        for index, row in enumerate(rows):
            for label, target in enumerate(labels):
                source = tuned.encoder.input_ids(row)
                joint, joint_mask = pad_left([source + target], tuned.tokenizer.pad_token_id, device="cpu")
                logprobs, _ = tuned.lm.target_logprobs(joint, joint_mask, torch.tensor([len(target)]))
                assert torch.allclose(logprobs.sum(), scores[index, label], atol=1e-4)
    config = TrainConfig(
        model=str(t5_dir),
        train=str(data_dir / "raft_twitter_complaints/train.csv"),
        template=TASK.template,
        label_field="Label",
        dev_fraction=0.2,
        num_virtual_tokens=4,
        init="sampled-vocab",
        epochs=3,
        lr=0.3,
        output=str(tmp_path / "run"),
        progress=False,
    )
    fit(config, base=t5)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    loaded = TunedPrompt.from_pretrained(tmp_path / "run", base=t5)
    assert isinstance(loaded.lm, PromptedSeq2SeqLM) and loaded.lm.n_prompt == 4
