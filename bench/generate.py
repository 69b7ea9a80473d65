"""Text to text, ours against PEFT in one run: a train step on SQuAD, and batched greedy generation of SQuAD
answers under one prompt and under 4 prompts mixed in one batch.

    python bench/generate.py --model smollm2-135m --rows 32 --new-tokens 24 --num-virtual-tokens 20

Train step: bench/train_step.py on the `squad` task (question and context, then the answer and EOS; loss on
the answer), the same left-padded [8, 256] batches on both sides, at 8 and 100 virtual tokens.

Generation: the first `--rows` SQuAD dev questions, left-padded into one batch, and 4 prompts (sampled-vocab,
seeds 0-3). Each side decodes exactly `--new-tokens` greedy tokens per row (no stop), so both write the same
number of tokens. Under one prompt: ours `generate` on the batch, PEFT's `generate` on the same batch. Mixed
(row i under prompt i mod 4): ours one batch, each row under its own prompt (the mixed prompt cache); PEFT holds
one active prompt-tuning adapter at a time, so it runs one `generate` per adapter on its rows (`set_adapter`).
Tokens/s = rows x new tokens / seconds, median of `--repeats` after an untimed warm-up (the sides alternate),
with how many rows' tokens equal ours (PEFT's position ids count the left pads, ours do not, so padded rows
may part). PEFT runs as it loads, its cache on (its default).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SOFTPROMPT_DATA", str(ROOT.parent / "shared" / "data"))

PROMPTS = 4  # prompts in the mixed batch


def train_steps(args) -> list[dict]:
    """bench/train_step.py on SQuAD at 8 and 100 virtual tokens: its ratio line for each."""
    lines = []
    for tokens in (8, 100):
        command = [sys.executable, str(ROOT / "bench" / "train_step.py"), "--model", args.model, "--task", "squad",
                   "--length", "256", "--num-virtual-tokens", str(tokens), "--steps", str(args.train_steps),
                   "--warmup", "1", "--dtype", args.dtype]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        for line in done.stdout.strip().splitlines():
            print(line, flush=True)
        lines.append(json.loads(line))
    return lines


def peft_side(model, prompts, tokenizer, new_tokens: int):
    """PEFT's model with one prompt-tuning adapter per prompt (p0..p3), each holding that prompt's matrix, and
    its greedy generation of exactly `new_tokens` tokens per row under adapter `name`."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=prompts[0].embedding.shape[0])
    peft = get_peft_model(model, config, adapter_name="p0")
    for index in range(1, len(prompts)):
        peft.add_adapter(f"p{index}", config)
    with torch.no_grad():
        for index, prompt in enumerate(prompts):
            peft.prompt_encoder[f"p{index}"].embedding.weight.copy_(prompt.embedding)
    peft.eval()

    def generate(name: str, ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        keep = mask.any(0)  # the sub-batch's own padding only
        ids, mask = ids[:, keep], mask[:, keep]
        peft.set_adapter(name)
        out = peft.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                            do_sample=False, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        return out[:, ids.shape[1] :].tolist()

    return generate


def generation(args) -> list[dict]:
    """Ours and PEFT's tokens/s under one prompt and under 4 mixed, medians of the repeats."""
    from anchor import peft_base

    from softprompt.data.batching import Encoder, pad_left
    from softprompt.data.tasks import load_named
    from softprompt.engine.causal import PromptedCausalLM
    from softprompt.models.base import load_base
    from softprompt.models.prompt import init_prompt

    model, tokenizer = load_base(args.model, args.dtype)
    task, rows, _ = load_named("squad", "dev")
    encoder = Encoder(task, tokenizer, task.max_length)
    ids, mask = pad_left([encoder.input_ids(row) for row in rows[: args.rows]], tokenizer.pad_token_id,
                         device=model.device)  # fmt: skip
    embeddings = model.get_input_embeddings()
    prompts = [init_prompt(args.num_virtual_tokens, embeddings, tokenizer, "sampled-vocab", seed=seed)
               for seed in range(PROMPTS)]  # fmt: skip
    lms = [PromptedCausalLM(model, prompt) for prompt in prompts]
    of_row = [lms[i % PROMPTS] for i in range(args.rows)]
    groups = [list(range(index, args.rows, PROMPTS)) for index in range(PROMPTS)]
    peft_generate = peft_side(peft_base(args.model, args.dtype)[0], prompts, tokenizer, args.new_tokens)

    def peft_mixed() -> list[list[int]]:
        out: list[list[int]] = [[] for _ in range(args.rows)]
        for index, group in enumerate(groups):
            for row, tokens in zip(group, peft_generate(f"p{index}", ids[group], mask[group])):
                out[row] = tokens
        return out

    sides: dict[str, dict[str, Callable[[], list[list[int]]]]] = {
        "one prompt": {"ours": lambda: lms[0].generate(ids, mask, args.new_tokens, None),
                       "peft": lambda: peft_generate("p0", ids, mask)},
        f"{PROMPTS} prompts mixed": {"ours": lambda: lms[0].generate(ids, mask, args.new_tokens, None, prompts=of_row),
                                     "peft": peft_mixed},
    }  # fmt: skip
    with torch.no_grad():  # warm-up, untimed: neither side's first call pays for the other's
        lms[0].generate(ids[:2], mask[:2], 2, None)
        peft_generate("p0", ids[:2], mask[:2])
    results = []
    for batch, runs in sides.items():
        seconds: dict[str, list[float]] = {"ours": [], "peft": []}
        tokens: dict[str, list[list[int]]] = {}
        for repeat in range(args.repeats):
            for side in ("ours", "peft")[:: 1 if repeat % 2 == 0 else -1]:
                start = time.perf_counter()
                with torch.no_grad():
                    tokens[side] = runs[side]()
                seconds[side].append(time.perf_counter() - start)
        made = args.rows * args.new_tokens
        assert all(len(row) == args.new_tokens for side in tokens.values() for row in side)
        ours_tps, peft_tps = (made / statistics.median(seconds[side]) for side in ("ours", "peft"))
        line = {"batch": batch, "rows": args.rows, "new_tokens": args.new_tokens,
                "input_tokens": int(mask.sum()), "ours_tokens_per_s": ours_tps, "peft_tokens_per_s": peft_tps,
                "ratio_ours_peft": ours_tps / peft_tps,
                "peft_rows_equal_to_ours": sum(a == b for a, b in zip(tokens["ours"], tokens["peft"]))}  # fmt: skip
        print(json.dumps(line), flush=True)
        results.append(line)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="float32", help="auto, float32 or bfloat16 (both sides)")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=24, help="greedy tokens per row (squad's max_new_tokens)")
    parser.add_argument("--num-virtual-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=5, help="timed train steps per side (0: no train step)")
    args = parser.parse_args()
    from softprompt.utils.hardware import describe

    print(json.dumps({"machine": describe(), "dtype": args.dtype, "model": args.model}), flush=True)
    steps = train_steps(args) if args.train_steps else []
    gen = generation(args)
    summary = {"summary": "ours/peft", "dtype": args.dtype,
               "train_step_time": {str(line["num_virtual_tokens"]): line["step_time"] for line in steps},
               "generation_tokens_per_s": {line["batch"]: line["ratio_ours_peft"] for line in gen}}  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
