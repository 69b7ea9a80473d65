"""Prompt folders in PEFT's format, plus our metadata and the training state for `--resume`.

A prompt folder holds `adapter_config.json` + `adapter_model.safetensors` (PEFT 0.21 loads it with
`PeftModel.from_pretrained`) and `softprompt.json` (task, init, metrics: record.py's), which PEFT ignores.
Every file is written to a temporary name and renamed, so a reader sees the old file or the new one.
Weights are only ever read from safetensors; pickles are refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save, save_file

from ..utils.errors import SoftpromptError

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
META = "softprompt.json"
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
PEFT_INIT = {"text": "TEXT", "sampled-vocab": "SAMPLE_VOCAB"}
Files = dict[str, bytes | dict[str, torch.Tensor]]  # a checkpoint's files: raw bytes, or tensors to write


def _write_synced(path: Path, data: bytes | dict[str, torch.Tensor]) -> None:
    """Write and fsync `data`; tensors go to a safetensors file straight from their memory, since serialising
    them to bytes first takes two transient copies (12 GB for model tuning's 0.5B weights and AdamW state)."""
    if isinstance(data, dict):
        save_file(data, str(path))
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        return
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target: a reader (or a crash,
    or a full disk) leaves the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        _write_synced(Path(tmp), data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_bytes(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def adapter_config(prompt: torch.Tensor, base_config, base_name: str, init: str, init_text: str | None) -> dict:
    """The adapter_config.json that PEFT 0.21 writes for a prompt-tuning adapter (causal or seq2seq LM)."""
    text = base_config.get_text_config()
    seq2seq = bool(getattr(base_config, "is_encoder_decoder", False))
    return {
        "auto_mapping": None,
        "base_model_name_or_path": base_name,
        "inference_mode": True,
        "modules_to_save": None,
        "num_attention_heads": text.num_attention_heads,
        "num_layers": text.num_hidden_layers,
        "num_transformer_submodules": 2 if seq2seq else 1,
        "num_virtual_tokens": prompt.shape[0],
        "peft_type": "PROMPT_TUNING",
        "prompt_tuning_init": PEFT_INIT.get(init, "RANDOM"),
        "prompt_tuning_init_text": init_text if init == "text" else None,
        "revision": None,
        "task_type": "SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM",
        "token_dim": prompt.shape[1],
        "tokenizer_kwargs": None,
        "tokenizer_name_or_path": base_name if init == "text" else None,
    }


def save_prompt(folder: Path, prompt: torch.Tensor, config: dict) -> None:
    """PEFT's layout: [N * num_transformer_submodules, d] rows (seq2seq repeats the prompt; PEFT reads the first
    N). The folder's record is written after, by the caller."""
    folder = Path(folder)
    rows = prompt.detach().float().cpu().repeat(config.get("num_transformer_submodules", 1), 1).contiguous()
    atomic_write(folder / WEIGHTS, save({"prompt_embeddings": rows}))
    atomic_write(folder / CONFIG, json_bytes(config))


def save_model(folder: Path, model, tokenizer) -> None:
    """A model-tuned folder: the model and tokenizer as Hugging Face saves them (safetensors). The record goes
    first and is written again last, by the caller, so a folder with softprompt.json is whole."""
    folder = Path(folder)
    (folder / META).unlink(missing_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SoftpromptError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SoftpromptError(f"{path}: expected a JSON object")
    return data


def load_prompt(folder: str | os.PathLike, hidden_size: int | None = None) -> tuple[torch.Tensor, dict]:
    """(prompt [N, d] float32, adapter config), each check a one-line error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SoftpromptError(f"{folder}: no such prompt folder")
    for name in (WEIGHTS, CONFIG, META):
        path = folder / name
        if path.is_symlink() and not path.resolve().is_relative_to(folder.resolve()):
            raise SoftpromptError(f"{path}: a symlink out of the prompt folder; refused")
    weights = folder / WEIGHTS
    if not weights.is_file():
        pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        hint = f" ({pickles[0]} is a pickle; we never load those)" if pickles else ""
        raise SoftpromptError(f"{folder}: no {WEIGHTS}{hint}")
    config = read_json(folder / CONFIG) if (folder / CONFIG).is_file() else {}
    if config.get("peft_type", "PROMPT_TUNING") != "PROMPT_TUNING":
        raise SoftpromptError(f"{folder / CONFIG}: peft_type {config['peft_type']!r} is not PROMPT_TUNING")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SoftpromptError(f"{weights}: not a valid safetensors file ({exc})") from None
    if "prompt_embeddings" not in tensors:
        raise SoftpromptError(f"{weights}: no 'prompt_embeddings' tensor (found: {', '.join(tensors) or 'none'})")
    prompt = tensors["prompt_embeddings"]
    if prompt.dim() != 2 or not prompt.is_floating_point():
        raise SoftpromptError(
            f"{weights}: prompt_embeddings must be a 2-D float matrix, got {prompt.dtype} {tuple(prompt.shape)}"
        )
    n_virtual = config.get("num_virtual_tokens", prompt.shape[0])
    if prompt.shape[0] < n_virtual:
        raise SoftpromptError(f"{weights}: {prompt.shape[0]} rows but num_virtual_tokens is {n_virtual}")
    prompt = prompt[:n_virtual].float()  # seq2seq PEFT folders hold 2N rows; the first N are the prompt
    if hidden_size is not None:
        check_hidden_size(folder, prompt, hidden_size)
    if not torch.isfinite(prompt).all():
        raise SoftpromptError(f"{weights}: prompt_embeddings holds NaN or Inf values")
    return prompt, config


def check_hidden_size(folder: Path, prompt: torch.Tensor, hidden_size: int) -> None:
    if prompt.shape[1] != hidden_size:
        raise SoftpromptError(
            f"{folder}: prompt was saved for hidden size {prompt.shape[1]}, this model has {hidden_size}"
        )


def save_checkpoint(root: Path, step: int, files: Files, keep: int = 2) -> Path:
    """Write `root/step-NNNNNNNN/` whole or not at all (temp folder, fsync, rename); keep the newest `keep`. A
    failed write (a full disk) is one line that says the earlier checkpoints are kept."""
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".step-", dir=root))
    target = root / f"step-{step:08d}"
    try:
        for name, data in files.items():
            _write_synced(staging / name, data)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except (OSError, SafetensorError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise SoftpromptError(f"{target}: cannot write this checkpoint ({exc}); the earlier ones are kept") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(root)
    for old in sorted(root.glob("step-*"))[:-keep]:
        # Renamed first, so a kill during the removal leaves a hidden leftover (cleaned by remove_partial at the
        # next start), never a kept checkpoint with files missing.
        trash = root / f".step-removing-{old.name}"
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(old, trash)
        shutil.rmtree(trash, ignore_errors=True)
    return target


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_partial(root: Path) -> None:
    """Delete staging folders that a killed run left mid-write (they were never renamed into place)."""
    for staging in root.glob(".step-*"):
        shutil.rmtree(staging, ignore_errors=True)


def latest_checkpoint(root: Path) -> Path | None:
    done = sorted(p for p in root.glob("step-*") if (p / STATE_JSON).is_file())
    return done[-1] if done else None


def state_files(trained: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, scheduler, progress: dict) -> Files:
    """The training state as safetensors (tensors: what is trained, by name, optimizer slots, RNG) + JSON
    (everything else): nothing is pickled."""
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in trained.items()}
    tensors["torch_rng"] = torch.get_rng_state()
    devices = {tensor.device for tensor in trained.values() if tensor.device.type == "cuda"}
    for device in devices:  # the CUDA generator of each GPU the run trains on
        tensors[f"cuda_rng.{device.index}"] = torch.cuda.get_rng_state(device)
    opt = optimizer.state_dict()
    layout: dict[str, dict[str, object]] = {}
    for index, slots in opt["state"].items():
        layout[str(index)] = {}
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
                layout[str(index)][name] = None
            else:
                layout[str(index)][name] = value
    state = {
        "progress": progress,
        "optimizer": {"param_groups": opt["param_groups"], "state": layout},
        "scheduler": scheduler.state_dict(),
    }
    return {STATE_TENSORS: tensors, STATE_JSON: json_bytes(state)}


def load_state(folder: Path, optimizer: torch.optim.Optimizer, scheduler) -> tuple[dict[str, torch.Tensor], dict]:
    """Restore optimizer, scheduler and RNG from a checkpoint folder; returns (the trained tensors, progress)."""
    state = read_json(folder / STATE_JSON)
    try:
        tensors = load_file(str(folder / STATE_TENSORS))
    except (SafetensorError, OSError) as exc:
        raise SoftpromptError(f"{folder / STATE_TENSORS}: unreadable ({exc})") from None
    slots = {
        int(index): {
            name: tensors[f"optimizer.{index}.{name}"] if value is None else value for name, value in entries.items()
        }
        for index, entries in state["optimizer"]["state"].items()
    }
    optimizer.load_state_dict({"state": slots, "param_groups": state["optimizer"]["param_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(tensors["torch_rng"])
    for name, rng in tensors.items():
        if name.startswith("cuda_rng.") and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng, int(name.removeprefix("cuda_rng.")))
    trained = {name: tensor for name, tensor in tensors.items() if name == "prompt" or name.startswith("model.")}
    return trained, state["progress"]
