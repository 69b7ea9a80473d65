"""What this machine runs fast, and the base-model dtype `--dtype auto` picks from it.

bfloat16 halves the frozen base's memory, but its speed depends on the processor: with AVX-512 BF16 or AMX
instructions oneDNN multiplies bfloat16 at least as fast as float32, while on a CPU with AVX2 alone it falls
back to a reference path about a hundred times slower (1.2 vs 119 GFLOP/s on one [256, 576] x [576, 1536]
multiply). So `auto` takes bfloat16 only where it is native and float32 everywhere else. The checks honour
oneDNN's and PyTorch's own caps (`ONEDNN_MAX_CPU_ISA`, `ATEN_CPU_CAPABILITY`), which is how the tests play an
AVX2-only machine on a newer one.
"""

from __future__ import annotations

import functools
import sys

import torch

from .errors import SoftpromptError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES)


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


def auto_dtype_reason(serving: bool = False) -> tuple[str, str]:
    """(dtype, why) for `auto`: bfloat16 where the GPU or CPU runs it natively, float32 elsewhere. A server's
    small batches (`serving`) take bfloat16 on a CPU only with AMX: with AVX-512 BF16 alone, float32 served
    about 1.5x the requests per second (docs/benchmarks.md), while training is faster in bfloat16 there."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bfloat16", f"GPU {name} runs bfloat16 natively"
        return "float32", f"GPU {name} has no native bfloat16"
    if native_cpu_bfloat16():
        if serving and not torch.cpu._is_amx_tile_supported():
            return "float32", f"CPU {cpu_capability()} without AMX: float32 serves small batches faster"
        return "bfloat16", f"CPU {cpu_capability()} with native bfloat16 instructions"
    return "float32", f"CPU {cpu_capability()} without native bfloat16 instructions"


def resolve_dtype(name: str, serving: bool = False) -> str:
    """A concrete dtype name for `name` (float32, bfloat16, or auto; see `auto_dtype_reason` for `serving`)."""
    if name not in DTYPE_CHOICES:
        raise SoftpromptError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {name!r}")
    return auto_dtype_reason(serving)[0] if name == "auto" else name


@functools.cache
def announce_dtype(name: str = "auto", serving: bool = False) -> None:
    """Print the dtype a run uses and the machine it runs on (for `auto`: what it picks here and why), once per
    process, so a training or serving log says what its figures came from (one-shot commands such as `eval`
    keep their one line of output)."""
    if name == "auto":
        dtype, why = auto_dtype_reason(serving)
        line = f"dtype auto -> {dtype} ({why})"
    else:
        where = f"GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else f"CPU {cpu_capability()}"
        line = f"dtype {name} (on {where})"
    print(f"softprompt: {line}", file=sys.stderr, flush=True)


def describe() -> dict[str, object]:
    """The facts a figure depends on, for run metadata and bench output."""
    return {
        "device": f"cuda: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cpu",
        "cpu_capability": cpu_capability(),
        "native_bfloat16": native_cpu_bfloat16(),
        "amx": torch.cpu._is_amx_tile_supported(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
