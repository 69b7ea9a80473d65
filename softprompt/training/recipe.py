"""The two training recipes and the batch order: functions of the config and the seed alone, so a resumed run
takes the same steps as an uninterrupted one.

The seed's recipe is AdamW with a linear schedule after warmup (PEFT's example); the paper's is Adafactor with a
constant lr of 0.3, weight decay 1e-5 and beta2 decay 0.8 (Lester et al. §3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .train_config import TrainConfig


def make_optimizer(config: TrainConfig, params, total_steps: int):
    """(optimizer, scheduler) for the chosen recipe; a whole model takes a thousand times smaller steps."""
    lr = config.trained_method.lr[config.optimizer] if config.lr is None else config.lr
    if config.optimizer == "adafactor":
        decay = 1e-5 if config.weight_decay is None else config.weight_decay
        optimizer = torch.optim.Adafactor(params, lr=lr, weight_decay=decay, beta2_decay=-0.8)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    decay = 0.01 if config.weight_decay is None else config.weight_decay
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=decay)
    warmup = config.warmup_steps

    def linear(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, linear)


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, bucket: bool) -> list[list[int]]:
    """Row indices per micro-batch for one epoch, a function of (seed, epoch) alone, so a resumed run sees
    the same batches. With `bucket`, rows of similar length share a batch (sorted within windows of 50
    batches, then the batches shuffled), which cuts padding."""
    generator = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + epoch)  # the same order on any device
    order = torch.randperm(len(lengths), generator=generator, device="cpu").tolist()
    if bucket:
        window = batch_size * 50
        order = [
            i
            for start in range(0, len(order), window)
            for i in sorted(order[start : start + window], key=lengths.__getitem__)
        ]
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if bucket:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator, device="cpu").tolist()]
    return batches
