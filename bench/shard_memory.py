"""Memory per process of sharded training (`--shard-base`, FSDP2) against plain data parallelism, in one run.

    python bench/shard_memory.py [--hidden 512 --layers 32 --processes 2 --steps 4]

A random-weight Llama (SmolLM2's tokenizer, float32, saved once as safetensors) is prompt-tuned twice on the
same RAFT tweets under `torchrun --nproc-per-node N`: each process's whole-run peak RSS, its RSS at the end
of training, and the base weights it holds are printed per process, then the sharded/plain ratios. Both
runs load the base through a file mapping before sharding (the page cache is shared), so the gain shows in
the memory each process owns while it trains. Not a PEFT comparison: PEFT's prompt tuning under FSDP is the
failure mode (peft #206, #1633) this option avoids.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SOFTPROMPT_DATA", str(ROOT.parent / "shared" / "data"))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(model: str, output: str, shard: bool, steps: int) -> None:
    """One torchrun process: train, then print this process's figures as a JSON line."""
    from softprompt import fit
    from softprompt.training.distributed import held_weights
    from softprompt.training.train import TrainConfig

    config = TrainConfig(model=model, task="raft/twitter_complaints", num_virtual_tokens=20, max_steps=steps,
                         batch_size=8, dtype="float32", output=output, progress=False, shard_base=shard,
                         seed=0)  # fmt: skip
    tuned = fit(config, overwrite=True)
    held, total = held_weights(tuned.lm.model)
    print(json.dumps({"rank": int(os.environ.get("RANK", 0)), "shard_base": shard, "held_weights": held,
                      "base_weights": total, "rss_end_mb": round(rss_mb()),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}),
          flush=True)  # fmt: skip


def make_model(folder: Path, hidden: int, layers: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from softprompt.models.base import load_base

    _, tokenizer = load_base("smollm2-135m", "float32")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 128,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "OUTPUT", "SHARD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.worker[2] == "1", args.steps)
        return
    from softprompt.utils.hardware import describe

    print(json.dumps({"bench": "shard_memory", "dtype": "float32", **describe(), "hidden": args.hidden,
                      "layers": args.layers, "processes": args.processes}), flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        make_model(Path(tmp) / "model", args.hidden, args.layers)
        runs = {}
        for shard in (False, True):
            command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.processes),
                       __file__, "--steps", str(args.steps), "--worker", str(Path(tmp) / "model"),
                       str(Path(tmp) / f"run-{int(shard)}"), str(int(shard))]  # fmt: skip
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
            runs[shard] = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
            for line in runs[shard]:
                print(json.dumps(line), flush=True)
    for key in ("held_weights", "rss_end_mb", "peak_rss_mb"):
        plain = max(r[key] for r in runs[False])
        sharded = max(r[key] for r in runs[True])
        print(f"{key}: plain {plain:,}  sharded {sharded:,}  sharded/plain {sharded / plain:.2f}", flush=True)


if __name__ == "__main__":
    main()
