"""Prepacked linear layers: the outputs and input gradients of nn.Linear, on one layer, a tiny model and the
real default model in bfloat16; float32 models stay as loaded. Where oneDNN cannot run bfloat16 (a CPU with
AVX2 alone, or `ONEDNN_MAX_CPU_ISA=AVX2`), a bfloat16 model must stay as loaded too."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from softprompt.engine.causal import PromptedCausalLM
from softprompt.models.base import load_base
from softprompt.models.prepacked import PrepackedLinear, prepack_linears, worth_prepacking
from softprompt.models.prompt import init_prompt
from softprompt.utils.hardware import cpu_capability

pytestmark = pytest.mark.portable  # whether and how weights are laid out is oneDNN's bfloat16 support here
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
BFLOAT16 = worth_prepacking(torch.bfloat16)
needs_bfloat16 = pytest.mark.skipif(
    not BFLOAT16, reason=f"oneDNN runs no bfloat16 on this CPU (capability {cpu_capability()}; needs AVX-512)"
)


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    scale = expected.float().abs().max()
    assert (actual.float() - expected.float()).abs().max() <= TOLERANCE[dtype] * scale


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=needs_bfloat16)])
@pytest.mark.parametrize("bias", [False, True])
def test_layer_gives_the_outputs_and_input_gradients_of_linear(dtype, bias):
    torch.manual_seed(0)  # float32 layers are never prepacked by load_base, but the layer handles both
    linear = nn.Linear(48, 80, bias=bias).to(dtype).requires_grad_(False)
    layer = PrepackedLinear(linear)
    assert torch.equal(layer.weight.to_dense(), linear.weight)
    # A transposed (non-contiguous) input, as attention outputs can be.
    x = torch.randn(7, 3, 48, dtype=dtype).transpose(0, 1).requires_grad_(True)
    grad_out = torch.randn(3, 7, 80, dtype=dtype)
    expected = linear(x)
    (expected_grad,) = torch.autograd.grad(expected, x, grad_out)
    actual = layer(x)
    (actual_grad,) = torch.autograd.grad(actual, x, grad_out)
    assert actual.shape == expected.shape and actual.dtype == dtype
    _close(actual, expected, dtype)
    _close(actual_grad, expected_grad, dtype)
    with torch.no_grad():
        _close(layer(x), expected, dtype)


def test_prepack_swaps_the_frozen_trunk_where_onednn_runs_bfloat16_and_keeps_the_tied_head(tiny_dir):
    model, _ = load_base(str(tiny_dir), "bfloat16", prepack=False)
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    assert prepack_linears(model) == (len(linears) - 1 if BFLOAT16 else 0)  # all but the LM head, or none
    assert type(model.lm_head) is nn.Linear
    assert model.lm_head.weight is model.get_input_embeddings().weight
    assert prepack_linears(model) == 0  # already done, or never worth it here

    trainable, _ = load_base(str(tiny_dir), "bfloat16", prepack=False)
    trainable.requires_grad_(True)
    assert prepack_linears(trainable) == 0  # weights that train must stay plain
    float32, _ = load_base(str(tiny_dir), "float32")
    assert not any(isinstance(m, PrepackedLinear) for m in float32.modules())  # float32 stays as loaded


@pytest.fixture(scope="module")
def smollm2_bfloat16():
    """The real default model in bfloat16 as load_base gives it (prepacked where oneDNN runs bfloat16), loaded
    once for the tests below; they only read it."""
    return load_base("smollm2-135m", "bfloat16")


def test_real_model_prepacks_its_trunk_where_onednn_runs_bfloat16(smollm2_bfloat16):
    """smollm2's 210 trunk layers in bfloat16 where oneDNN runs it; none where it cannot (AVX2)."""
    model, _ = smollm2_bfloat16
    assert sum(isinstance(m, PrepackedLinear) for m in model.modules()) == (210 if BFLOAT16 else 0)


@needs_bfloat16
def test_real_model_scores_and_gradients_match_the_plain_model(smollm2_bfloat16, smollm2):
    """A prepacked bfloat16 smollm2 gives the prompt loss, prompt gradient and label scores of transformers'
    model as it loads. The two bfloat16 gradients part by about 1% where AMX accumulates in another order than
    the plain path, so the gradient is held to the float32 model's (the session's frozen smollm2): packed as
    close to it as plain is."""
    packed_model, tokenizer = smollm2_bfloat16
    plain_model, _ = load_base("smollm2-135m", "bfloat16", prepack=False)
    reference_model, _ = smollm2
    assert any(isinstance(m, PrepackedLinear) for m in packed_model.modules())
    assert not any(isinstance(m, PrepackedLinear) for m in plain_model.modules())
    rows = [tokenizer(text).input_ids for text in ["Tweet text : my flight is late again Label :", "Label :"]]
    targets = [tokenizer(" complaint").input_ids, tokenizer(" no complaint").input_ids]
    results = []
    for model in (packed_model, plain_model, reference_model):
        prompt = init_prompt(8, model.get_input_embeddings(), tokenizer, "text", init_text="Classify the tweet:")
        lm = PromptedCausalLM(model, prompt)
        loss = -lm.target_logprob_sum(rows, targets).sum()
        loss.backward()
        with torch.no_grad():
            scores = torch.stack(lm.score_rows(rows, [targets] * len(rows)))
        results.append((loss.detach(), prompt.embedding.grad.float(), scores))
    (loss, grad, scores), (plain_loss, plain_grad, plain_scores), (_, reference_grad, _) = results
    assert abs(loss - plain_loss) <= 1e-3 * abs(plain_loss)
    assert (grad - plain_grad).norm() <= 3e-2 * plain_grad.norm()
    plain_error = (plain_grad - reference_grad).norm()
    assert (grad - reference_grad).norm() <= 1.25 * plain_error + 1e-3 * reference_grad.norm()
    assert (scores - plain_scores).abs().max() <= 2e-2
