"""Training step time, engine against engine: ours and PEFT's on identical padded batches, in one run.

    python bench/train_step.py --model smollm2-135m --num-virtual-tokens 100 --batch-size 8 --length 64
    python bench/train_step.py --task squad --length 256   # text to text: question and context, then the answer

Both sides get the same left-padded [batch, length] batches of a shipped task's training rows + target (RAFT
tweets + label by default; loss on the target tokens),
the same prompt init and AdamW. Each side runs in its own child process (so each one's peak RSS is its own);
the parent prints one JSON line per side (median step seconds, peak RSS) and the ratio ours/PEFT.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SOFTPROMPT_DATA", str(ROOT.parent / "shared" / "data"))


def batches(tokenizer, args) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(ids, mask, labels with -100 off the label, label lengths), every batch exactly [batch, length]."""
    from fixed_padding import fixed_padding

    from softprompt.data.batching import Encoder
    from softprompt.data.tasks import load_named

    task, rows, _ = load_named(args.task, "train")
    encoder = Encoder(task, tokenizer, args.length)
    out = []
    for step in range(args.steps + args.warmup):
        chunk = [rows[(step * args.batch_size + i) % len(rows)] for i in range(args.batch_size)]
        out.append(fixed_padding(encoder, chunk, args.length))
    return out


def run_side(args) -> dict:
    from anchor import peft_base

    from softprompt.engine.causal import PromptedCausalLM
    from softprompt.models.base import load_base
    from softprompt.models.prompt import init_prompt
    from softprompt.utils.hardware import describe

    model, tokenizer = (load_base if args.side == "ours" else peft_base)(args.model, args.dtype)
    args.dtype = str(model.dtype).removeprefix("torch.")
    data = batches(tokenizer, args)
    init_text = "Classify if the tweet is a complaint or not:"
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.side == "ours":
        prompt = init_prompt(
            args.num_virtual_tokens, model.get_input_embeddings(), tokenizer, "text", init_text=init_text
        )
        lm = PromptedCausalLM(model, prompt)
        params = [prompt.embedding]

        def step(ids, mask, labels, lengths):
            return lm.loss(ids, mask, lengths)
    else:
        from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

        folder = ROOT / "runs" / "bench-tokenizer"
        tokenizer.save_pretrained(folder)
        peft = get_peft_model(model, PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM, prompt_tuning_init=PromptTuningInit.TEXT,
            num_virtual_tokens=args.num_virtual_tokens, prompt_tuning_init_text=init_text,
            tokenizer_name_or_path=str(folder)))  # fmt: skip
        params = [p for p in peft.parameters() if p.requires_grad]

        def step(ids, mask, labels, lengths):
            return peft(input_ids=ids, attention_mask=mask, labels=labels).loss

    optimizer = torch.optim.AdamW(params, lr=3e-2)
    times, losses = [], []
    for index, (ids, mask, labels, lengths) in enumerate(data):
        start = time.perf_counter()
        loss = step(ids, mask, labels, lengths)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
            losses.append(loss.item())
    return {
        "side": args.side,
        "model": args.model,
        "dtype": args.dtype,
        "machine": describe(),
        "num_virtual_tokens": args.num_virtual_tokens,
        "batch_size": args.batch_size,
        "length": args.length,
        "steps": args.steps,
        "step_s_median": statistics.median(times),
        "first_loss": losses[0],
        "rss_after_load_mb": loaded_rss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="raft/twitter_complaints", help="a shipped task (its training rows)")
    parser.add_argument("--num-virtual-tokens", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", default="auto", help="auto, float32 or bfloat16 (both sides)")
    parser.add_argument("--side", choices=("ours", "peft"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(args)))
        return
    results = {}
    for side in ("ours", "peft"):
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--side", side],
                               capture_output=True, text=True, check=True)  # fmt: skip
        results[side] = json.loads(child.stdout.strip().splitlines()[-1])
        print(json.dumps(results[side]), flush=True)
    ours, peft = results["ours"], results["peft"]
    print(
        json.dumps(
            {
                "ratio": "ours/peft",
                "task": args.task,
                "dtype": ours["dtype"],
                "cpu_capability": ours["machine"]["cpu_capability"],
                "num_virtual_tokens": args.num_virtual_tokens,
                "step_time": ours["step_s_median"] / peft["step_s_median"],
                "peak_rss": ours["peak_rss_mb"] / peft["peak_rss_mb"],
                "training_rss_over_load": (ours["peak_rss_mb"] - ours["rss_after_load_mb"])
                / max(1e-9, peft["peak_rss_mb"] - peft["rss_after_load_mb"]),
            }
        )
    )


if __name__ == "__main__":
    main()
