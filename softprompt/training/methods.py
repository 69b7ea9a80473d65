"""How a run makes what it trains: a fresh prompt on a frozen base (prompt tuning, from an init of prompt.py or
from the demonstrations), or a trainable model behind a prompt of no tokens (model tuning); and putting a saved
prompt or model back in place.

Model tuning is the paper's upper baseline: the same rows, loss, schedule, evaluation and checkpoints as prompt
tuning, with the model's own weights trained instead of a prompt, in float32 (an optimizer step in bfloat16
would round most updates away). What each method trains and saves is its `Method`'s (prompts/method.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..data.tasks import Row, Task
from ..models.base import Base, load_base
from ..models.prompt import SoftPrompt, init_prompt
from ..prompts import checkpoint
from ..prompts.demonstrations import demonstrations
from ..prompts.method import Method
from ..prompts.record import FolderRecord
from ..prompts.tuned import TunedPrompt, encoder_for
from ..utils import hardware
from ..utils.errors import ParameterError, SoftpromptError
from ..utils.memory import available_bytes
from .train_config import DESIGN_INIT, TrainConfig

INIT_FROM = "prompt-folder"  # the record's init of a run started from a trained prompt (--init-from)


def base_for_run(config: TrainConfig, base: Base | None, dtype: str, method: Method) -> tuple[Base, FolderRecord]:
    """`base` if given, else `config.model` loaded in `dtype` (announcing the dtype and the machine); and the
    record every run's folder starts from (method, seed, recipe, the dtype and machine it ran on)."""
    # A base to be sharded keeps its weights as parameters (prepacking would lay them out in other modules), read
    # through a file mapping, so that no process copies the blocks' weights it will not keep.
    loaded = base or load_base(config.model, dtype, prepack=not config.shard_base, device=config.device)
    if base is None:  # once it loaded: a model that fails to load leaves its one-line error alone
        hardware.announce_dtype(dtype, device=loaded.device)
    record = FolderRecord(
        method=method,
        seed=config.seed,
        base_dtype=str(loaded.model.dtype).removeprefix("torch."),  # what `auto` chose on this machine
        hardware=hardware.describe(loaded.device),  # what really ran: the device, and on a GPU its versions
        train_config=dataclasses.asdict(config),
    )
    return loaded, record


def make_tuned(config: TrainConfig, task: Task, rows: list[Row], base: Base | None = None) -> TunedPrompt:
    """The base (loaded unless given) with what the method trains made ready: a freshly initialised prompt on a
    frozen base (from the training `rows` with --init prompt-design), or a trainable model behind a prompt of
    no tokens; its record says how it was made."""
    method = config.trained_method
    base, record = base_for_run(config, base, "float32" if method.trains_model else config.dtype, method)
    model, encoder = base.model, encoder_for(base, task, config.max_length)
    mode = method.training_mode(config.gradient_checkpointing)
    if config.gradient_checkpointing:
        # Recompute activations in the backward pass; the prompt cache needs `use_cache`, which checkpointing
        # turns off, so such a run scores in the reference mode (the prompt concatenated in front).
        model.gradient_checkpointing_enable()
    if method.trains_model:
        check_room_for_model_tuning(model, config.model, config.optimizer)
        model.requires_grad_(True)
        prompt = SoftPrompt.frozen(torch.zeros(0, model.config.get_text_config().hidden_size, device=model.device))
        return TunedPrompt.build(base, prompt, encoder, record=record, mode=mode)
    if config.init_from:  # a trained prompt trains on (a server job whose `model` is a served task)
        trained, _ = checkpoint.load_prompt(config.init_from, model.config.get_text_config().hidden_size)
        record.init = INIT_FROM
        return TunedPrompt.build(base, SoftPrompt(trained.to(model.device)), encoder, record=record, mode=mode)
    init_text = config.init_text or task.init_text
    # The paper's default, class labels, where there are labels; a text-to-text task starts from sampled words.
    record.init = config.init or ("text" if init_text else "sampled-vocab" if task.generates else "class-label")
    if record.init == DESIGN_INIT:
        # Starts as prompt design's prompt, one vector a token, so step 0 scores exactly as the untrained
        # baseline and training can only move on from it.
        embeds, examples = demonstrations(model, encoder, rows, config.shots, config.seed)
        if not examples:
            raise ParameterError("max_length", "leaves no room for a single example in the model's context")
        prompt, record.shots = SoftPrompt(embeds), len(examples)  # as prompt design records it: those that fit
    else:
        prompt = init_prompt(
            config.num_virtual_tokens,
            model.get_input_embeddings(),
            base.tokenizer,
            record.init,
            seed=config.seed,
            init_text=init_text,
            label_words=task.label_words,
            init_range=config.init_range,
        )
        record.init_text = init_text
    return TunedPrompt.build(base, prompt, encoder, record=record, mode=mode)


def optimizer_bytes(model, optimizer: str) -> int:
    """What model tuning adds beside the loaded weights (float32): the gradients, and AdamW's two moments or
    Adafactor's factored second moment (a row and a column per matrix, whole for vectors; no first moment)."""
    params = list(model.parameters())
    grads = sum(param.numel() * param.element_size() for param in params)
    if optimizer == "adafactor":
        factored = sum(p[..., 0, 0].numel() * sum(p.shape[-2:]) if p.dim() >= 2 else p.numel() for p in params)
        return grads + 4 * factored
    return 3 * grads


def check_room_for_model_tuning(model, name: str, optimizer: str) -> None:
    """Fail before the first step, not at it, where the gradients and optimizer state will not fit in the
    memory left beside the loaded model: the GPU's free memory for a model on a GPU, the system's for one on
    the CPU."""
    needed = optimizer_bytes(model, optimizer)
    available = torch.cuda.mem_get_info(model.device)[0] if model.device.type == "cuda" else available_bytes()
    if available is not None and needed > available:
        raise ParameterError(
            "method",
            "model-tuning {name} needs about {need:.1f} GB more for gradients and {optimizer} state (float32), "
            "and {free:.1f} GB is available here; prompt-tuning trains a prompt of a few KB instead",
            name=name,
            need=needed / 2**30,
            optimizer=optimizer,
            free=available / 2**30,
        )


@torch.no_grad()
def load_trained(folder: Path, tuned: TunedPrompt) -> FolderRecord:
    """Put what `tuned.save_pretrained(folder)` saved (a prompt, or a model's weights) back in place; its record."""
    if not tuned.record.method.trains_model:
        prompt, _ = checkpoint.load_prompt(folder)
        tuned.lm.prompt.embedding.copy_(prompt)
        return FolderRecord.read(folder)
    weights = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        weights.update(load_file(str(path)))
    _, unexpected = tuned.lm.model.load_state_dict(weights, strict=False)
    if unexpected or not weights:
        raise SoftpromptError(
            f"{folder}: not this model's weights ({len(weights)} tensors, unexpected: {unexpected[:3]})"
        )
    return FolderRecord.read(folder)
