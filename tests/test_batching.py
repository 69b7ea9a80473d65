"""batching.py: the Encoder (rows -> token ids, cut to max_length keeping the template's tail) and padding, on the
default model's tokenizer."""

from __future__ import annotations

import pytest

from softprompt.data.batching import Encoder, pad_left, target_batch
from softprompt.data.tasks import (
    Task,
)
from softprompt.utils.errors import SoftpromptError

RAFT = "raft_twitter_complaints/train.csv"
RAFT_TEMPLATE = "Tweet text : {Tweet text} Label : "


# --- Encoder ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    """SmolLM2's tokenizer, read from the converted model's folder (a fresh machine converts the GGUF once)."""
    from transformers import AutoTokenizer

    from softprompt.models.base import resolve

    return AutoTokenizer.from_pretrained(resolve("smollm2-135m"))


def token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_label_ids_end_with_eos(tokenizer):
    task = Task("Sentence : {sentence} Sentiment : ", "label", ["0", "1"], {"0": "negative", "1": "positive"})
    encoder = Encoder(task, tokenizer, 64)
    eos = tokenizer.eos_token_id
    assert eos is not None
    assert encoder.label_ids == [token_ids(tokenizer, "negative") + [eos], token_ids(tokenizer, "positive") + [eos]]


def test_short_input_is_not_cut(tokenizer):
    task = Task(RAFT_TEMPLATE, "Label", ["complaint", "no complaint"])
    encoder = Encoder(task, tokenizer, 64)
    row = {"Tweet text": "@shop where is my parcel"}
    assert encoder.input_ids(row) == token_ids(tokenizer, task.render(row))


def test_long_input_is_cut_in_the_middle_keeping_the_tail(tokenizer):
    """Input + longest label fit max_length; the head and the template's tail (" Label : ") survive."""
    task = Task(RAFT_TEMPLATE, "Label", ["complaint", "no complaint"])
    encoder = Encoder(task, tokenizer, max_length=24)
    row = {"Tweet text": " ".join(f"word{i}" for i in range(300))}
    full = token_ids(tokenizer, task.render(row))
    ids = encoder.input_ids(row)
    longest_label = max(len(label) for label in encoder.label_ids)
    assert len(ids) + longest_label == 24  # cut to the budget exactly, not below it
    tail = token_ids(tokenizer, " Label : ")
    assert ids[-len(tail) :] == tail
    assert tokenizer.decode(ids).endswith(" Label : ")
    assert ids[: len(ids) - len(tail)] == full[: len(ids) - len(tail)]
    assert tokenizer.decode(ids).startswith("Tweet text : word0 word1")
    # Every label, appended, fits.
    assert all(len(ids) + len(label) <= 24 for label in encoder.label_ids)


def test_max_length_too_small(tokenizer):
    task = Task(RAFT_TEMPLATE, "Label", ["complaint", "no complaint"])
    with pytest.raises(SoftpromptError, match="max_length: 5"):
        Encoder(task, tokenizer, max_length=5)


def test_pad_left_and_mask(tokenizer):
    pad = tokenizer.pad_token_id
    assert pad is not None
    ids, mask = pad_left([[5, 6, 7], [8], []], pad, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [pad, pad, 8], [pad, pad, pad]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]


def test_target_batch_appends_targets():
    batch = target_batch([[1, 2, 3], [4]], [[9, 2], [7, 8, 2]], 0, device="cpu")
    assert batch.input_ids.tolist() == [[1, 2, 3, 9, 2], [0, 4, 7, 8, 2]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]
    assert batch.target_lengths.tolist() == [2, 3]
