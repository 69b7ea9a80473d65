"""The seed recipe (PEFT's twitter_complaints prompt-tuning example) end to end: ours and PEFT's, one run.

Both sides, as configs/seed_recipe.toml has it: smollm2-135m in float32, the same 40/10 train/dev split of
RAFT twitter_complaints train (stratified, seed 42), text init "Classify if the tweet is a complaint or not:",
8 virtual tokens, AdamW lr 3e-2 + linear schedule, batch 8, 50 epochs, then held-out metrics on the first N rows of
test_labeled_from_original.csv. PEFT's side follows its example: inputs left-padded to max_length 64,
generate-then-match evaluation; we also score PEFT's prompt by rank classification, as ours is scored.

    python bench/seed_recipe.py [--epochs 50] [--limit 1000] [--sides ours,peft] [--dtypes float32,bfloat16]

Prints one JSON line per side and one with the ratios (ours / PEFT).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
import tomllib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SOFTPROMPT_DATA", str(ROOT.parent / "shared" / "data"))

from anchor import peft_base  # noqa: E402
from fixed_padding import fixed_padding  # noqa: E402

from softprompt.data.batching import Encoder, chunks, pad_left, target_batch  # noqa: E402
from softprompt.data.tasks import load_named, split_dev  # noqa: E402
from softprompt.models.base import load_base  # noqa: E402
from softprompt.prompts.evaluate import classification_metrics  # noqa: E402
from softprompt.training.train import TrainConfig, fit  # noqa: E402
from softprompt.utils.hardware import describe, resolve_dtype  # noqa: E402

RECIPE_FILE = ROOT / "configs" / "seed_recipe.toml"
RECIPE = TrainConfig.from_dict(tomllib.loads(RECIPE_FILE.read_text()), str(RECIPE_FILE))
TASK, SEED = RECIPE.task, RECIPE.seed


def ours(args, dtype: str, test_rows) -> dict:
    output = str(ROOT / "runs" / f"bench-seed-ours-{dtype}")
    config = dataclasses.replace(RECIPE, epochs=args.epochs, dtype=dtype, output=output, progress=False)
    base = load_base(RECIPE.model, dtype)
    start = time.perf_counter()
    tuned = fit(config, base=base, overwrite=True)
    train_s = time.perf_counter() - start
    result = tuned.evaluate(test_rows, 32)
    return {
        "side": "softprompt",
        "dtype": dtype,
        "train_s": train_s,
        "total_s": time.perf_counter() - start,
        "test_n": result["n"],
        "accuracy": result["accuracy"],
        "macro_f1": result["macro_f1"],
        "examples_per_s": result["examples_per_s"],
    }


def peft_side(args, train_rows, dev_rows, test_rows) -> dict:
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
    from transformers import get_linear_schedule_with_warmup

    model, tokenizer = peft_base(RECIPE.model)
    task, _, _ = load_named(TASK, "train")
    encoder = Encoder(task, tokenizer, RECIPE.max_length)
    tokenizer.save_pretrained(ROOT / "runs" / "bench-tokenizer")
    config = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        prompt_tuning_init=PromptTuningInit.TEXT,
        num_virtual_tokens=RECIPE.num_virtual_tokens,
        prompt_tuning_init_text=task.init_text,
        tokenizer_name_or_path=str(ROOT / "runs" / "bench-tokenizer"),
    )
    peft = get_peft_model(model, config)

    optimizer = torch.optim.AdamW(peft.parameters(), lr=RECIPE.lr)
    steps_per_epoch = math.ceil(len(train_rows) / RECIPE.batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, steps_per_epoch * args.epochs)
    generator = torch.Generator().manual_seed(SEED)
    step_times = []
    start = time.perf_counter()
    for epoch in range(args.epochs):
        peft.train()
        order = torch.randperm(len(train_rows), generator=generator).tolist()
        for batch in chunks([train_rows[i] for i in order], RECIPE.batch_size):
            tick = time.perf_counter()
            ids, mask, labels, _ = fixed_padding(encoder, batch, RECIPE.max_length)
            loss = peft(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step_times.append(time.perf_counter() - tick)
        peft.eval()
        with torch.no_grad():
            ids, mask, labels, _ = fixed_padding(encoder, dev_rows, 64)
            eval_loss = peft(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
        print(
            json.dumps(
                {
                    "side": "peft",
                    "epoch": epoch + 1,
                    "train_loss": loss.item(),
                    "eval_loss": eval_loss,
                    "eval_ppl": math.exp(eval_loss),
                }
            ),
            file=sys.stderr,
        )
    train_s = time.perf_counter() - start
    gold = [task.label_index(row) for row in test_rows]

    start = time.perf_counter()
    predicted = []
    words = [w.lower() for w in task.label_words]
    with torch.no_grad():
        for batch in chunks(test_rows, 32):
            ids, mask = pad_left([encoder.input_ids(row) for row in batch], tokenizer.pad_token_id, device="cpu")
            out = peft.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=10,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                do_sample=False,
            )
            for row in out[:, ids.shape[1] :]:
                text = tokenizer.decode(row, skip_special_tokens=True).strip().lower()
                predicted.append(words.index(text) if text in words else -1)
    generate_s = time.perf_counter() - start
    generated = classification_metrics(predicted, gold, len(words))

    start = time.perf_counter()
    ranked = []
    with torch.no_grad():
        for batch in chunks(test_rows, 16):
            pairs = [(encoder.input_ids(row), target) for row in batch for target in encoder.label_ids]
            tb = target_batch([p[0] for p in pairs], [p[1] for p in pairs], tokenizer.pad_token_id,
                              device="cpu")
            logits = peft(input_ids=tb.input_ids, attention_mask=tb.attention_mask).logits[:, 8:].float()
            logprobs = torch.log_softmax(logits[:, :-1], -1).gather(-1, tb.input_ids[:, 1:, None]).squeeze(-1)
            width = tb.input_ids.shape[1] - 1
            keep = torch.arange(width)[None] >= (width - tb.target_lengths)[:, None]
            ranked += (logprobs * keep).sum(1).view(len(batch), -1).argmax(1).tolist()
    rank_s = time.perf_counter() - start
    ranked_metrics = classification_metrics(ranked, gold, len(words))
    return {
        "side": "peft",
        "dtype": "float32",
        "train_s": train_s,
        "total_s": train_s + generate_s,  # its example's own evaluation
        "step_s_median": statistics.median(step_times),
        "test_n": len(test_rows),
        "accuracy": generated["accuracy"],
        "macro_f1": generated["macro_f1"],
        "examples_per_s": len(test_rows) / generate_s,
        "rank_accuracy": ranked_metrics["accuracy"],
        "rank_macro_f1": ranked_metrics["macro_f1"],
        "rank_examples_per_s": len(test_rows) / rank_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--sides", default="ours,peft")
    parser.add_argument("--dtypes", default="float32", help="our side's base dtypes, e.g. float32,bfloat16,auto")
    args = parser.parse_args()
    print(json.dumps({"machine": describe()}), flush=True)
    torch.manual_seed(SEED)
    task, rows, _ = load_named(TASK, "train")
    train_rows, dev_rows = split_dev(rows, RECIPE.dev_fraction, SEED, task.label_field)
    test_rows = load_named(TASK, "test")[1][: args.limit]
    results = {}
    if "ours" in args.sides:
        for dtype in map(resolve_dtype, args.dtypes.split(",")):
            results[dtype] = ours(args, dtype, test_rows)
            print(json.dumps(results[dtype]), flush=True)
    if "peft" in args.sides:
        peft = peft_side(args, train_rows, dev_rows, test_rows)
        print(json.dumps(peft), flush=True)
        for dtype, o in results.items():
            print(
                json.dumps(
                    {
                        "ratio": f"ours-{dtype}/peft",
                        "speedup_end_to_end": peft["total_s"] / o["total_s"],
                        "speedup_training": peft["train_s"] / o["train_s"],
                        "accuracy_diff_points_vs_peft_generate": 100 * (o["accuracy"] - peft["accuracy"]),
                        "accuracy_diff_points_vs_peft_rank": 100 * (o["accuracy"] - peft["rank_accuracy"]),
                    }
                )
            )


if __name__ == "__main__":
    main()
