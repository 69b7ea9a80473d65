"""Where a model runs (`--device`), what that device runs fast, and the base-model dtype `--dtype auto` picks.

bfloat16 halves the frozen base's memory, but its speed depends on the processor: with AVX-512 BF16 or AMX
instructions oneDNN multiplies bfloat16 at least as fast as float32, while on a CPU with AVX2 alone it falls
back to a reference path about a hundred times slower (1.2 vs 119 GFLOP/s on one [256, 576] x [576, 1536]
multiply). So `auto` takes bfloat16 only where it is native and float32 everywhere else. The checks honour
oneDNN's and PyTorch's own caps (`ONEDNN_MAX_CPU_ISA`, `ATEN_CPU_CAPABILITY`), which is how the tests play an
AVX2-only machine on a newer one. On a GPU `auto` takes bfloat16 where the GPU has it, else float16 (the
prompt and its optimizer state stay float32 either way).
"""

from __future__ import annotations

import functools
import os
import sys

import torch

from .errors import ParameterError, SoftpromptError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)
DEVICE_HELP = "where the model runs: auto (the first CUDA GPU where there is one, else the CPU), cpu, cuda, cuda:N"


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The device `name` (a name or a torch.device) means here. `auto` and a bare `cuda` take the process's own
    GPU: under torchrun, cuda:LOCAL_RANK, so each rank runs on its GPU. Asking for a GPU this machine lacks is one
    line, raised before any weights load."""
    if name == "auto":
        return resolve_device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ParameterError("device", "must be auto, cpu, cuda or cuda:N, got {name!r}", name=str(name))
    if device.type == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        raise ParameterError("device", "{name} asked for, but this machine has no CUDA device (torch {torch}, {build})",
                             name=str(name), torch=torch.__version__, build=build)  # fmt: skip
    index = device.index if device.index is not None else int(os.environ.get("LOCAL_RANK", "0"))
    if index >= torch.cuda.device_count():
        raise ParameterError("device", "{name}: this machine has {n} CUDA device(s)", name=f"cuda:{index}",
                             n=torch.cuda.device_count())  # fmt: skip
    return torch.device("cuda", index)


def cpu_capability() -> str:
    """The instruction set PyTorch's CPU kernels dispatch to here (e.g. AVX512, AVX2)."""
    return torch.backends.cpu.get_cpu_capability()


def onednn_bfloat16() -> bool:
    """oneDNN runs bfloat16 here at all (False under an AVX2 cap); natively or emulated on AVX-512."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def native_cpu_bfloat16() -> bool:
    """The CPU has bfloat16 instructions (AVX-512 BF16 or AMX) and neither library is capped below them."""
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return native and onednn_bfloat16() and cpu_capability().startswith("AVX512")


def auto_dtype_reason(serving: bool = False, device: torch.device | str = "auto") -> tuple[str, str]:
    """(dtype, why) for `auto` on `device`: on a GPU, bfloat16 where it runs it natively, else float16; on a
    CPU, bfloat16 where it runs it natively, else float32. A server's small batches (`serving`) take bfloat16 on
    a CPU only with AMX: with AVX-512 BF16 alone, float32 served about 1.5x the requests per second
    (docs/benchmarks.md), while training is faster in bfloat16 there."""
    device = resolve_device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bfloat16", f"GPU {name} runs bfloat16 natively"
        return "float16", f"GPU {name} has no native bfloat16"
    if native_cpu_bfloat16():
        if serving and not torch.cpu._is_amx_tile_supported():
            return "float32", f"CPU {cpu_capability()} without AMX: float32 serves small batches faster"
        return "bfloat16", f"CPU {cpu_capability()} with native bfloat16 instructions"
    return "float32", f"CPU {cpu_capability()} without native bfloat16 instructions"


def resolve_dtype(name: str, serving: bool = False, device: torch.device | str = "auto") -> str:
    """A concrete dtype name for `name` on `device` (see `auto_dtype_reason` for `auto` and `serving`)."""
    if name not in DTYPE_CHOICES:
        raise SoftpromptError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {name!r}")
    return auto_dtype_reason(serving, device)[0] if name == "auto" else name


def where(device: torch.device) -> str:
    """The device in words, for a log line: `GPU NAME` or `CPU CAPABILITY`."""
    return f"GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else f"CPU {cpu_capability()}"


@functools.cache
def announce_dtype(name: str = "auto", serving: bool = False, device: torch.device | None = None) -> None:
    """Print the dtype a run uses and the machine it runs on (for `auto`: what it picks here and why), once per
    process, so a training or serving log says what its figures came from (one-shot commands such as `eval`
    keep their one line of output)."""
    device = device or resolve_device()
    if name == "auto":
        dtype, why = auto_dtype_reason(serving, device)
        line = f"dtype auto -> {dtype} ({why})"
    else:
        line = f"dtype {name} (on {where(device)})"
    print(f"softprompt: {line}", file=sys.stderr, flush=True)


def describe(device: torch.device | None = None) -> dict[str, object]:
    """The facts a figure depends on, for run metadata and bench output: on a GPU, its name, compute
    capability, and the CUDA runtime and driver versions as well."""
    device = device or resolve_device()
    facts: dict[str, object] = {"device": str(device)}
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        facts.update(gpu=torch.cuda.get_device_name(device), compute_capability=f"{major}.{minor}",
                     cuda=torch.version.cuda, driver=driver_version())  # fmt: skip
    facts.update(
        cpu_capability=cpu_capability(),
        native_bfloat16=native_cpu_bfloat16(),
        amx=torch.cpu._is_amx_tile_supported(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
    )
    return facts


def driver_version() -> str | None:
    """The NVIDIA driver's version (NVML, where nvidia-ml-py is installed), else the CUDA version the driver
    supports, else None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:  # no NVML here: fall back to what the CUDA driver API says
        pass
    try:
        supported = torch._C._cuda_getDriverVersion()  # e.g. 13000 for CUDA 13.0
        return f"supports CUDA {supported // 1000}.{supported % 1000 // 10}"
    except (AttributeError, RuntimeError):
        return None
