"""Data-parallel training over torch.distributed, started by `torchrun` (gloo on CPU, NCCL on GPU).

Each process takes its slice of every micro-batch; the prompt's gradient and the loss sums are added up
across processes before the optimizer step, so every process applies the same update to the same prompt:
n processes train as one process with the same global batch split into n accumulated micro-batches, bit for
bit. (Against one unsplit micro-batch the gradient is the same sum, rounded differently, since its rows are
packed into other sequences.) Only the main process evaluates and writes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch


class DataParallel:
    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = 0
        if self.world > 1:
            from accelerate import PartialState  # sets up the process group from torchrun's environment

            # Without `cpu=True` accelerate sets up a CPU-only launch as a single process of world size 1.
            state = PartialState(cpu=not torch.cuda.is_available())
            self.rank, self.world = state.process_index, state.num_processes

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence) -> Sequence:
        """This process's contiguous block of a micro-batch: process k of n takes the k-th of n blocks, which
        is the k-th micro-batch of a one-process run with `grad_accum` n, so the two runs add up the same
        per-block gradients and reach the same prompt bit for bit (at the same thread count)."""
        size = len(items)
        return items[self.rank * size // self.world : (self.rank + 1) * size // self.world]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Add `tensor` up across processes, in place."""
        if self.world > 1:
            torch.distributed.all_reduce(tensor)
        return tensor

    def decide(self, flag: bool) -> bool:
        """The main process's decision (e.g. early stopping), on every process."""
        if self.world == 1:
            return flag
        value = torch.tensor([int(flag)])
        torch.distributed.broadcast(value, src=0)
        return bool(value.item())
