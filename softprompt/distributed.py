"""Data-parallel training over torch.distributed, started by `accelerate launch` (gloo on CPU, NCCL on GPU).

Each process takes its slice of every micro-batch; the prompt's gradient and the loss sums are added up
across processes before the optimizer step, so every process applies the same update to the same prompt
and the run matches one process with the same global batch. Only the main process evaluates and writes.
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
            from accelerate import PartialState  # sets up the process group from accelerate's environment

            state = PartialState()
            self.rank, self.world = state.process_index, state.num_processes

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence) -> Sequence:
        return items[self.rank :: self.world]

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
