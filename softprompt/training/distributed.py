"""Data-parallel training over torch.distributed, started by `torchrun` (gloo on CPU, NCCL on GPU: each rank
on its own GPU, cuda:LOCAL_RANK, and every tensor it sums or broadcasts made there).

Each process takes its slice of every micro-batch; the prompt's gradient and the loss sums are added up
across processes before the optimizer step, so every process applies the same update to the same prompt:
n processes train as one process with the same global batch split into n accumulated micro-batches, bit for
bit. (Against one unsplit micro-batch the gradient is the same sum, rounded differently, since its rows are
packed into other sequences.) Only the main process writes.

With `--shard-base` the frozen base's blocks are sharded over the processes (FSDP2, torch's `fully_shard`):
each process keeps 1/n of every block's weights and gathers a block's whole weights only while it runs. The
prompt stays replicated and its gradient is summed as above; the embeddings, final norm and output layer stay
replicated too (they are called outside the blocks' forwards). A sharded block runs only where every process
runs it, so then every process also evaluates (the main one still writes alone), and a process whose share of
a micro-batch is empty runs one row at zero weight.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence

import torch
from torch import nn

from ..utils.memory import map_large_allocations


class DataParallel:
    def __init__(self, device: torch.device | None = None) -> None:
        """`device`: this process's (cuda:LOCAL_RANK under torchrun on GPUs); its type picks gloo or NCCL."""
        self.device = device or torch.device("cpu")
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = 0
        if self.world > 1:
            from accelerate import PartialState  # sets up the process group from torchrun's environment

            # Without `cpu=True` accelerate sets up a CPU-only launch as a single process of world size 1; on
            # GPUs it takes NCCL and makes cuda:LOCAL_RANK this process's current device.
            state = PartialState(cpu=self.device.type == "cpu")
            self.rank, self.world = state.process_index, state.num_processes

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard_blocks(self, model: nn.Module) -> int:
        """Shard each of `model`'s blocks (the modules of its outermost ModuleLists) over the processes, in
        place; how many blocks were sharded (0 in a one-process run, where there is nothing to share)."""
        if self.world == 1:
            return 0
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(next(model.parameters()).device.type, (self.world,))  # where the base already is
        map_large_allocations()
        blocks = [block for blocks in outer_module_lists(model) for block in blocks]
        for block in blocks:
            fully_shard(block, mesh=mesh)
            # Each block is its own FSDP root (the model around them is not sharded), and a root keeps its whole
            # weights after its forward for the backward; freed here, the backward gathers them again.
            block.register_forward_hook(lambda module, inputs, output: module.reshard())
        for tensor in [*model.parameters(), *model.buffers()]:  # the replicated rest, out of the loaded file's buffer
            if not hasattr(tensor, "to_local"):
                tensor.data = tensor.data.clone()
        gc.collect()  # so the blocks' whole weights, read with it, are freed
        if self.main:
            held, total = held_weights(model)
            print(f"softprompt: base sharded over {self.world} processes ({len(blocks)} blocks); this process holds "
                  f"{held:,} of its {total:,} weights", file=sys.stderr, flush=True)  # fmt: skip
        return len(blocks)

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
        value = torch.tensor([int(flag)], device=self.device)
        torch.distributed.broadcast(value, src=0)
        return bool(value.item())


def held_weights(model: nn.Module) -> tuple[int, int]:
    """(weights this process holds, weights of the whole model): a sharded parameter counts its local shard."""
    params = list(model.parameters())
    held = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in params)
    return held, sum(p.numel() for p in params)


def outer_module_lists(model: nn.Module) -> list[nn.ModuleList]:
    """The ModuleLists not inside another one: a decoder's layers, or a T5's encoder and decoder blocks."""
    found: list[tuple[str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and not any(name.startswith(outer + ".") for outer, _ in found):
            found.append((name, module))
    return [module for _, module in found]
