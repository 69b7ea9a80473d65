"""Batches as PEFT's prompt-tuning example builds them, shared by the benches that train PEFT's side."""

from __future__ import annotations

import torch


def fixed_padding(encoder, rows, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input + target + EOS per row (a label word, or a text-to-text target), left-padded to exactly `length`
    (the encoder's max_length, so every row fits), labels -100 off the target: (ids, mask, labels, target lengths)."""
    pad_id = encoder.tokenizer.pad_token_id
    ids, mask, labels, lengths = [], [], [], []
    for row in rows:
        source, target = encoder.input_ids(row), encoder.target_ids(row)
        pad = length - len(source) - len(target)
        ids.append([pad_id] * pad + source + target)
        mask.append([0] * pad + [1] * (len(source) + len(target)))
        labels.append([-100] * (pad + len(source)) + target)
        lengths.append(len(target))
    return torch.tensor(ids), torch.tensor(mask), torch.tensor(labels), torch.tensor(lengths)
