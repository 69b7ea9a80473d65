"""Rows -> token ids -> left-padded batches, padded to the longest row of each batch (never a fixed length)."""

from __future__ import annotations

import functools
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ..utils.errors import ParameterError, SoftpromptError
from .tasks import Row, Task

DEFAULT_NEW_TOKENS = 64  # a text-to-text task's target budget and decoding length, unless the task sets one


@dataclass
class Encoder:
    """Tokenises a task's rows. Inputs and label words (or text-to-text targets) are tokenised apart and joined
    as ids (as PEFT's recipe does), so training targets and scored continuations are the very same ids."""

    task: Task
    tokenizer: object
    max_length: int = 64
    input_eos: bool = False  # encoder inputs keep the tokenizer's EOS (T5 was trained so); decoder-only drop it

    def __post_init__(self) -> None:
        eos = self.tokenizer.eos_token_id
        self.eos = [eos] if eos is not None else []
        self.label_ids = [self._ids(word) + self.eos for word in self.task.label_words]
        for word, ids in zip(self.task.label_words, self.label_ids):
            if len(ids) <= (eos is not None):
                raise SoftpromptError(f"label word {word!r} has no tokens")
        # A text-to-text target's budget (its tokens and EOS), and what decoding writes at most.
        longest_label = max(map(len, self.label_ids), default=0)
        self.max_new_tokens = self.task.max_new_tokens or (DEFAULT_NEW_TOKENS if self.task.generates else longest_label)
        self.target_budget = self.max_new_tokens + len(self.eos) if self.task.generates else longest_label
        tail = self.task.template.rsplit("}", 1)[-1] if self.task.fields else ""
        self.tail_length = len(self._ids(tail)) if tail else 0
        self.chat_before, self.chat_after = chat_frame_ids(self.tokenizer) if self.task.chat else ([], [])
        self.input_budget = self.max_length - self.target_budget - len(self.chat_before) - len(self.chat_after)
        if self.input_budget <= self.tail_length:
            raise ParameterError("max_length", "{n} leaves no room for the input after the label or target",
                                 n=self.max_length)  # fmt: skip
        # The template's text before its first field, tokenised, minus the last token (which may merge with
        # the text that follows): most rows start with these ids, so their keys/values can be cached.
        text = next(string.Formatter().parse(self.task.template), ("",))[0]
        self.head = self.chat_before + (self._content(text)[:-1] if text else [])  # the template head

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def input_ids(self, row: Row | str, max_tokens: int | None = None) -> list[int]:
        """The one way a row becomes the model's input (training, evaluation, prediction, the server): its
        template's fields checked, the template rendered, tokenised and cut to fit. A string is the row of a
        one-field template. `max_tokens` as in `tokenize`, before the cut."""
        fields = self.task.fields
        if isinstance(row, str):
            if len(fields) != 1:
                raise ParameterError("row", "a text fills one field; the template has {names}",
                                     names=", ".join(map(repr, fields)) or "no fields")  # fmt: skip
            row = {fields[0]: row}
        missing = [name for name in fields if name not in row]
        if missing:
            raise ParameterError("row", "missing field {name!r}", name=missing[0])
        text = self.task.render(row)
        if not self.task.chat:
            return self.cut(self.tokenize(text, max_tokens))
        content = self._content(text)
        frame = len(self.chat_before) + len(self.chat_after)
        if max_tokens is not None and not 0 < len(content) <= max_tokens - frame:
            raise ParameterError("text", "empty or longer than {n} tokens", n=max_tokens)
        return self.chat_before + self.cut(content) + self.chat_after

    def text(self, row: Row) -> str:
        """The row's input as text, inside the chat frame when the task has one: what an outside client (the
        harness, an OpenAI completions call) sends for the ids `input_ids` makes (an uncut input)."""
        text = self.task.render(row)
        if not self.task.chat:
            return text
        before, after = self._client_frame
        return before + text + after

    @functools.cached_property
    def _client_frame(self) -> tuple[str, str]:
        """The chat frame's text as a client sends it: a BOS the template writes is left out where the tokenizer
        adds its own, so that it is not there twice."""
        before, after = chat_frame(self.tokenizer)
        bos = self.tokenizer.bos_token
        if bos and before.startswith(bos) and self.tokenizer("x")["input_ids"][:1] == [self.tokenizer.bos_token_id]:
            before = before[len(bos) :]
        return before, after

    def _content(self, text: str) -> list[int]:
        """A rendered input's own ids: as `tokenize` makes them, or, in a chat, the user message's content alone
        (the template's own tokens, BOS among them, are `chat_before`)."""
        return self._ids(text) if self.task.chat else self.tokenize(text)

    def target_ids(self, row: Row) -> list[int]:
        """What the model is trained to write after the row: its label word's ids and EOS (classification), or
        its target's ids cut at the end to the budget, then EOS (text to text)."""
        if not self.task.generates:
            return self.label_ids[self.task.label_index(row)]
        return self._ids(self.task.target(row))[: self.max_new_tokens] + self.eos

    @functools.cached_property
    def stop_ids(self) -> list[int]:
        """The vocabulary's ids whose text holds one of the task's stop strings (a newline, by default): decoding
        ends after one, and the text is cut at the stop string."""
        stops = [stop for stop in self.task.stop if stop]
        if not stops:
            return []
        texts = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
        return [i for i, text in enumerate(texts) if any(stop in text for stop in stops)]

    def finish(self, ids: Sequence[int]) -> str:
        """Decoded ids as the task's answer: special tokens dropped, cut at the first stop string, stripped."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for stop in self.task.stop:
            if stop:
                text = text.split(stop, 1)[0]
        return text.strip()

    def targets_cut(self, rows: Sequence[Row]) -> int:
        """How many text-to-text targets `target_ids` cuts to fit `max_new_tokens`."""
        if not self.task.generates:
            return 0
        return sum(len(self._ids(self.task.target(row))) > self.max_new_tokens for row in rows)

    def tokenize(self, text: str, max_tokens: int | None = None) -> list[int]:
        """Token ids with the tokenizer's own leading special tokens (BOS where the model expects one, as
        PEFT's recipe tokenises); a trailing EOS only for encoder inputs. With `max_tokens` (a server's
        limit), a ParameterError unless there are 1 to `max_tokens` of them."""
        ids = self.tokenizer(text)["input_ids"]
        if not self.input_eos and ids and ids[-1] == self.tokenizer.eos_token_id:
            ids = ids[:-1]
        if max_tokens is not None and not 0 < len(ids) <= max_tokens:
            raise ParameterError("text", "empty or longer than {n} tokens", n=max_tokens)
        return ids

    def cut(self, ids: list[int]) -> list[int]:
        """Cut in the middle so that the template's tail (e.g. " Label : ") survives and the label fits."""
        if len(ids) <= self.input_budget:
            return ids
        keep_head = self.input_budget - self.tail_length
        return ids[:keep_head] + (ids[len(ids) - self.tail_length :] if self.tail_length else [])


CONTENT = "\ue000"  # a private-use character no chat template writes: where the user message's content goes


def chat_frame(tokenizer) -> tuple[str, str]:
    """A chat template's text before and after a user message's content, the assistant's turn opened after it:
    tokenised apart from the content, so that a long input is cut inside the content alone."""
    if not getattr(tokenizer, "chat_template", None):
        raise ParameterError("chat", "the model's tokenizer ({name}) has no chat template", name=tokenizer.name_or_path)
    text = tokenizer.apply_chat_template([{"role": "user", "content": CONTENT}], tokenize=False,
                                         add_generation_prompt=True)  # fmt: skip
    if text.count(CONTENT) != 1:
        raise ParameterError("chat", "the chat template of {name} does not write a message's content once",
                             name=tokenizer.name_or_path)  # fmt: skip
    before, after = text.split(CONTENT)
    return before, after


def chat_frame_ids(tokenizer) -> tuple[list[int], list[int]]:
    """`chat_frame`'s two texts as ids, each tokenised alone (the template writes its own special tokens)."""
    before, after = (tokenizer(part, add_special_tokens=False)["input_ids"] for part in chat_frame(tokenizer))
    return before, after


def _pad(
    sequences: Sequence[Sequence[int]], pad_id: int, left: bool, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded in Python and made on `device` at once: one copy to a GPU, not one per row."""
    width = max(len(s) for s in sequences)
    ids, mask = [], []
    for seq in sequences:
        pads, real = [pad_id] * (width - len(seq)), list(seq)
        ids.append(pads + real if left else real + pads)
        mask.append([0] * len(pads) + [1] * len(real) if left else [1] * len(real) + [0] * len(pads))
    return torch.tensor(ids, dtype=torch.long, device=device), torch.tensor(mask, dtype=torch.long, device=device)


def pad_left(
    sequences: Sequence[Sequence[int]], pad_id: int, *, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad to the longest sequence: (ids, attention mask) on `device`. Inputs are left-padded so every row
    ends at the last column, where generation and the first label token continue."""
    return _pad(sequences, pad_id, True, device)


def pad_right(
    sequences: Sequence[Sequence[int]], pad_id: int = 0, *, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (label continuations, which all start right after their input)."""
    return _pad(sequences, pad_id, False, device)


@dataclass
class TargetBatch:
    """Inputs followed by target ids; the loss and scores are read at the last `target_lengths` tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_lengths: torch.Tensor


def target_batch(
    inputs: Sequence[list[int]], targets: Sequence[list[int]], pad_id: int, *, device: torch.device | str
) -> TargetBatch:
    ids, mask = pad_left([i + t for i, t in zip(inputs, targets)], pad_id, device=device)
    return TargetBatch(ids, mask, torch.tensor([len(t) for t in targets], device=device))


def in_length_order(
    sequences: Sequence[list[int]], batch_size: int, pad_id: int, run: Callable, *, device: torch.device | str
) -> list:
    """`run(indices, ids, mask)` over left-padded batches (on `device`) of sequences of similar length (little
    padding), with its per-sequence results put back in the sequences' order."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    results: list = [None] * len(sequences)
    for chunk in chunks(order, batch_size):
        ids, mask = pad_left([sequences[i] for i in chunk], pad_id, device=device)
        for index, value in zip(chunk, run(chunk, ids, mask)):
            results[index] = value
    return results


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
