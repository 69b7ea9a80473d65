"""Frozen linear layers whose weights are laid out once for oneDNN's CPU matrix multiply.

A plain `nn.Linear` on CPU hands its row-major weight to the matrix library, which copies it into its own
blocked layout (pair-interleaved for bfloat16) on every call. A frozen base never changes its weights, so
we lay each one out once: a multiply then reads it straight from memory, which the benches in
docs/benchmarks.md show as faster training steps and classification. The backward pass multiplies by the
transposed weight; training lays that out too, on first use. The row-major weight is dropped, so an
inference process holds each weight once and a training process twice. We prepack bfloat16 models only: in
float32 that second copy (4 bytes per parameter) lifted a training step's peak memory on smollm2 to PEFT's.
"""

from __future__ import annotations

import torch
from torch import nn

from ..utils.hardware import onednn_bfloat16
from ..utils.memory import release_free_memory


def worth_prepacking(dtype: torch.dtype) -> bool:
    """Whether we prepack weights of `dtype` here: bfloat16, where this build and CPU run it in oneDNN."""
    return dtype == torch.bfloat16 and onednn_bfloat16()


def _layout(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous())


def _multiply(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


class _Linear(torch.autograd.Function):
    """y = x W^T + b with gradients for x only (the weights are frozen)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: PrepackedLinear) -> torch.Tensor:
        ctx.layer = layer
        return _multiply(x, layer.weight, layer.bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _multiply(grad, ctx.layer.transposed(), None), None


class PrepackedLinear(nn.Module):
    """A frozen `nn.Linear` (same inputs, same outputs) holding its weight in oneDNN's layout.

    `weight` is an opaque oneDNN tensor (its dtype and shape are the original's; `.to_dense()` gives the
    plain weight back). The layer cannot be trained or moved off the CPU."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = _layout(linear.weight)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self._transposed: torch.Tensor | None = None

    def transposed(self) -> torch.Tensor:
        """W^T in oneDNN's layout, for the backward pass (laid out on the first backward)."""
        if self._transposed is None:
            self._transposed = _layout(self.weight.to_dense().t())
        return self._transposed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            return _Linear.apply(x, self)
        return _multiply(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def release_transposed(model: nn.Module) -> None:
    """Drop the W^T layouts backward passes made (a server's fine-tuning job, done): one more copy of the linear
    weights that serving never reads."""
    for layer in model.modules():
        if isinstance(layer, PrepackedLinear):
            layer._transposed = None


def prepacked_parameters(model: nn.Module) -> int:
    """The weights and biases prepacking moved out of `model.parameters()`, counted."""
    return sum(
        layer.in_features * layer.out_features + (layer.bias.numel() if layer.bias is not None else 0)
        for layer in model.modules()
        if isinstance(layer, PrepackedLinear)
    )


def prepack_linears(model: nn.Module) -> int:
    """Swap the frozen CPU `nn.Linear` layers of `model` (the output embeddings excepted: they are tied to
    the input embeddings in most models) for PrepackedLinear; returns how many were swapped.

    Leaves alone layers of another dtype (see `worth_prepacking`), on another device, or with trainable
    weights."""
    skip = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (
                type(child) is nn.Linear
                and child is not skip
                and child.weight.device.type == "cpu"
                and not child.weight.requires_grad
                and worth_prepacking(child.weight.dtype)
            ):
                setattr(parent, name, PrepackedLinear(child))
                swapped += 1
    if swapped:
        release_free_memory()  # the row-major weights just replaced
    return swapped
