"""`--dtype auto`: bfloat16 where the CPU (or GPU) runs it natively, float32 elsewhere; printed once and recorded
in the run's metadata. The host's own choice is checked against /proc/cpuinfo, the other branches against
patched capabilities, and the AVX2 case in a process under oneDNN's and ATen's AVX2 caps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from softprompt.utils import hardware
from softprompt.utils.errors import SoftpromptError

AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
pytestmark = pytest.mark.portable  # what auto picks is the CPU's (and the caps') doing


def _cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":")[1].split()}


def test_auto_picks_float32_on_an_avx2_cpu():
    code = "from softprompt.utils import hardware; hardware.announce_dtype(); print(hardware.resolve_dtype('auto'))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **AVX2}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "float32"
    assert "dtype auto -> float32 (CPU AVX2 without native bfloat16 instructions)" in done.stderr
    code = "from softprompt.utils import hardware; hardware.announce_dtype('float32')"
    given = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={**os.environ, **AVX2})  # fmt: skip
    assert given.stderr.strip() == "softprompt: dtype float32 (on CPU AVX2)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU: auto follows the GPU, not the CPU")
def test_the_hosts_choice_follows_its_cpu_flags():
    """Independent of torch: the kernel's CPU flags and the caps in the environment say what auto must pick."""
    flags = _cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this host")
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper() in ("SSE41", "AVX", "AVX2", "AVX2_VNNI") or (
        os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("default", "avx2")
    )
    native = bool({"avx512_bf16", "amx_bf16"} & flags) and not capped
    assert hardware.auto_dtype_reason()[0] == ("bfloat16" if native else "float32")


@pytest.mark.parametrize(
    ("native", "onednn", "capability", "expected"),
    [
        (True, True, "AVX512", "bfloat16"),  # AVX-512 BF16 or AMX
        (False, True, "AVX512", "float32"),  # AVX-512 without bfloat16 instructions: oneDNN emulates it
        (True, False, "AVX512", "float32"),  # oneDNN capped below AVX-512
        (True, True, "AVX2", "float32"),  # ATen capped to AVX2
    ],
)
def test_auto_on_patched_cpus(monkeypatch, native, onednn, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(hardware, "onednn_bfloat16", lambda: onednn)
    monkeypatch.setattr(hardware, "cpu_capability", lambda: capability)
    dtype, why = hardware.auto_dtype_reason()
    assert dtype == expected and capability in why


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bfloat16"), (False, "float16")])
def test_auto_on_patched_gpus(monkeypatch, bf16, expected):
    """A GPU's own dtype: bfloat16 where it has it, else float16 (the prompt stays float32 either way)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Test GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    dtype, why = hardware.auto_dtype_reason()
    assert dtype == expected and "Test GPU" in why
    assert hardware.resolve_device("auto") == torch.device("cuda", 0)


def test_the_cpu_asked_for_on_a_gpu_machine_keeps_the_cpus_dtype(monkeypatch):
    """`--device cpu` beside a GPU: auto follows the CPU the model runs on, not the GPU it does not use."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(hardware, "native_cpu_bfloat16", lambda: False)
    assert hardware.resolve_dtype("auto", device="cpu") == "float32"


def test_devices_resolve_or_fail_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.resolve_device("auto") == torch.device("cpu") == hardware.resolve_device("cpu")
    with pytest.raises(SoftpromptError, match=r"^device: cuda asked for, but this machine has no CUDA device"):
        hardware.resolve_device("cuda")
    with pytest.raises(SoftpromptError, match=r"^device: must be auto, cpu, cuda or cuda:N, got 'tpu'"):
        hardware.resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")  # under torchrun: each rank its own GPU
    assert hardware.resolve_device("auto") == torch.device("cuda", 1) == hardware.resolve_device("cuda")
    assert hardware.resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(SoftpromptError, match=r"^device: cuda:2: this machine has 2 CUDA device\(s\)"):
        hardware.resolve_device("cuda:2")


def test_an_unknown_dtype_is_one_line():
    with pytest.raises(SoftpromptError, match="dtype must be one of auto, float32, bfloat16, float16, got 'float64'"):
        hardware.resolve_dtype("float64")


def test_a_training_run_prints_and_records_the_choice(tiny_dir, data_dir, tmp_path):
    args = [
        sys.executable, "-m", "softprompt", "train", "--model", str(tiny_dir),
        "--train", str(data_dir / "raft_twitter_complaints/train.csv"), "--template", "Tweet text : {Tweet text} ",
        "--label-field", "Label", "--max-steps", "1", "--no-progress", "--output", str(tmp_path / "run"),
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    dtype, why = hardware.auto_dtype_reason()
    assert done.stderr.count("dtype auto ->") == 1
    assert f"softprompt: dtype auto -> {dtype} ({why})" in done.stderr
    meta = json.loads((tmp_path / "run" / "softprompt.json").read_text())
    assert meta["train_config"]["dtype"] == "auto"
    assert meta["base_dtype"] == dtype
    assert meta["hardware"]["cpu_capability"] == hardware.cpu_capability()


@pytest.mark.parametrize(("amx", "expected"), [(False, "float32"), (True, "bfloat16")])
def test_a_server_takes_bfloat16_on_a_cpu_only_with_amx(monkeypatch, amx, expected):
    """AVX-512 BF16 alone: training's auto stays bfloat16, serving's is float32 (faster at small batches)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(hardware, "onednn_bfloat16", lambda: True)
    monkeypatch.setattr(hardware, "cpu_capability", lambda: "AVX512")
    assert hardware.resolve_dtype("auto") == "bfloat16"
    assert hardware.resolve_dtype("auto", serving=True) == expected
    assert hardware.resolve_dtype("bfloat16", serving=True) == "bfloat16"  # an explicit dtype is kept
