"""The anchor's base model, shared by the benches: the model as a PEFT user has it."""

from __future__ import annotations

from softprompt.models.base import load_base


def peft_base(ref: str = "smollm2-135m", dtype: str = "float32"):
    """(model, tokenizer) for PEFT's side: transformers' model as it loads (no prepacked weights), on its
    default attention (SDPA), frozen, with the same tokenizer and pad token as ours."""
    model, tokenizer = load_base(ref, dtype, prepack=False)
    model.set_attn_implementation("sdpa")
    return model, tokenizer
