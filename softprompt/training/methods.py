"""What a training run trains: the prompt (prompt tuning), or every weight of the model (model tuning).

Model tuning is the paper's upper baseline: the same rows, loss, schedule, evaluation and checkpoints as prompt
tuning, with the model's own weights trained instead of a prompt. It runs on a prompt of no tokens in the
reference scoring mode (no keys/values are kept, since the weights change at every step), in float32 (an
optimizer step in bfloat16 would round most updates away), and saves a Hugging Face model folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..data.batching import Encoder
from ..data.tasks import Row, Task
from ..engine.prompted import ScoringMode
from ..models.base import load_base
from ..models.prompt import SoftPrompt, init_prompt
from ..prompts import checkpoint
from ..prompts.demonstrations import demonstrations
from ..prompts.tuned import TunedPrompt
from ..utils import hardware
from ..utils.errors import ParameterError, SoftpromptError
from ..utils.memory import available_bytes
from .train_config import DESIGN_INIT, TrainConfig


def base_for_run(config: TrainConfig, base, dtype: str, method: str) -> tuple[object, object, dict]:
    """(model, tokenizer, metadata): `base` if given, else `config.model` loaded in `dtype` (announcing the
    dtype and the machine); the metadata every run's folder records (method, seed, the dtype and machine it
    ran on)."""
    # A base to be sharded keeps its weights as parameters (prepacking would lay them out in other modules), read
    # through a file mapping, so that no process copies the blocks' weights it will not keep.
    model, tokenizer = base or load_base(config.model, dtype, prepack=not config.shard_base, device=config.device)
    if base is None:  # once it loaded: a model that fails to load leaves its one-line error alone
        hardware.announce_dtype(dtype, device=model.device)
    meta = {
        "method": method,
        "seed": config.seed,
        "base_dtype": str(model.dtype).removeprefix("torch."),  # what `auto` chose on this machine
        "hardware": hardware.describe(model.device),  # what really ran: the device, and on a GPU its versions
    }
    return model, tokenizer, meta


def make_tuned(config: TrainConfig, task: Task, rows: list[Row], base=None) -> TunedPrompt:
    """The base (loaded unless given as (model, tokenizer)) with what the method trains made ready: a freshly
    initialised prompt on a frozen base (from the training `rows` with --init prompt-design), or a trainable
    base behind a prompt of no tokens; and the metadata the output folder records about how it was made."""
    model_tuning = config.method == "model-tuning"
    dtype = "float32" if model_tuning else config.dtype
    model, tokenizer, meta = base_for_run(config, base, dtype, config.method)
    meta["train_config"] = dataclasses.asdict(config)
    if config.gradient_checkpointing:
        # Recompute activations in the backward pass; the prompt cache needs `use_cache`, which checkpointing
        # turns off, so such a run scores in the reference mode (the prompt concatenated in front).
        model.gradient_checkpointing_enable()
    if model_tuning:
        check_room_for_model_tuning(model, config.model)
        model.requires_grad_(True)
        prompt = SoftPrompt.frozen(torch.zeros(0, model.config.get_text_config().hidden_size, device=model.device))
        return TunedPrompt.build(model, tokenizer, prompt, task, config.max_length, meta, ScoringMode.REFERENCE)
    init_text = config.init_text or task.init_text
    init = config.init or ("text" if init_text else "class-label")
    if init == DESIGN_INIT:
        prompt, examples = _design_init(config, task, rows, model, tokenizer)
        meta.update(init=init, shots=len(examples))  # as prompt design records it: the examples that fit
    else:
        prompt = init_prompt(
            config.num_virtual_tokens,
            model.get_input_embeddings(),
            tokenizer,
            init,
            seed=config.seed,
            init_text=init_text,
            label_words=task.label_words,
            init_range=config.init_range,
        )
        meta.update(init=init, init_text=init_text)
    mode = ScoringMode.REFERENCE if config.gradient_checkpointing else ScoringMode.PACKED
    return TunedPrompt.build(model, tokenizer, prompt, task, config.max_length, meta, mode)


def _design_init(config: TrainConfig, task: Task, rows: list[Row], model, tokenizer) -> tuple[SoftPrompt, list[Row]]:
    """A trainable prompt that starts as prompt design's: `shots` examples written out, one vector a token, so
    step 0 scores exactly as the untrained baseline and training can only move on from it; and the examples."""
    embeds, examples = run_demonstrations(config, task, rows, model, tokenizer)
    if not examples:
        raise ParameterError("max_length", "leaves no room for a single example in the model's context")
    return SoftPrompt(embeds), examples


def check_room_for_model_tuning(model, name: str) -> None:
    """Fail before the first step, not at it, where the gradients and AdamW's two moments (float32, three more
    copies of every weight) will not fit in the memory left beside the loaded model: the GPU's free memory for
    a model on a GPU, the system's for one on the CPU."""
    needed = 3 * sum(param.numel() * param.element_size() for param in model.parameters())
    available = torch.cuda.mem_get_info(model.device)[0] if model.device.type == "cuda" else available_bytes()
    if available is not None and needed > available:
        raise ParameterError(
            "method",
            "model-tuning {name} needs about {need:.1f} GB more for gradients and optimizer state (float32), "
            "and {free:.1f} GB is available here; prompt-tuning trains a prompt of a few KB instead",
            name=name,
            need=needed / 2**30,
            free=available / 2**30,
        )


def trained_tensors(tuned: TunedPrompt) -> dict[str, torch.Tensor]:
    """The tensors the optimizer updates, by the names checkpoints store them under."""
    if tuned.meta.get("method") == "model-tuning":
        return {f"model.{name}": param for name, param in tuned.lm.base.named_parameters()}
    return {"prompt": tuned.lm.prompt.embedding}


@torch.no_grad()
def load_trained(folder: Path, tuned: TunedPrompt) -> dict:
    """Put what `tuned.save_pretrained(folder)` saved (a prompt, or a model's weights) back in place; its metadata."""
    if tuned.meta.get("method") != "model-tuning":
        prompt, _, meta = checkpoint.load_prompt(folder)
        tuned.lm.prompt.embedding.copy_(prompt)
        return meta
    weights = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        weights.update(load_file(str(path)))
    _, unexpected = tuned.lm.base.load_state_dict(weights, strict=False)
    if unexpected or not weights:
        raise SoftpromptError(
            f"{folder}: not this model's weights ({len(weights)} tensors, unexpected: {unexpected[:3]})"
        )
    return checkpoint.read_meta(folder)


def run_demonstrations(
    config: TrainConfig, task: Task, rows: list[Row], model, tokenizer
) -> tuple[torch.Tensor, list[Row]]:
    """`demonstrations` as a run makes them: `config`'s shots and seed, its inputs cut to its max_length."""
    encoder = Encoder(task, tokenizer, config.max_length, input_eos=model.config.is_encoder_decoder)
    return demonstrations(model, encoder, rows, config.shots, config.seed)
