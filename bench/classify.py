"""Held-out classification throughput: our rank classification against PEFT's generate-then-match, one run.

    python bench/classify.py [--prompt runs/demo] [--limit 1000] [--batch-size 32] [--dtype auto]
                             [--peft-dtype DTYPE]   (default: --dtype; PEFT's generation is fastest in float32)

The same trained prompt folder (PEFT loads ours as is; docs/benchmarks.md's figures are for a SmolLM2-135M
prompt, e.g. `softprompt train --config configs/seed_recipe.toml --output runs/demo`), the same 1,000 RAFT
twitter_complaints test rows and batch size. Ours scores every label in one pass over the inputs (packed rows,
shared prompt cache, label-only LM head); we also run the same scoring without the prompt cache (the prompt
recomputed in every forward) and our plain path (the prompt concatenated in front of one padded sequence per
label), and count the predictions that differ from ours. PEFT generates up to 10 tokens per row and matches
the label word, as in its example. Prints one JSON line per side and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SOFTPROMPT_DATA", str(ROOT.parent / "shared" / "data"))

from anchor import peft_base  # noqa: E402

from softprompt.data.batching import chunks, pad_left  # noqa: E402
from softprompt.data.tasks import load_named  # noqa: E402
from softprompt.engine.prompted import ScoringMode  # noqa: E402
from softprompt.models.base import load_base  # noqa: E402
from softprompt.prompts.evaluate import classification_metrics, label_scores  # noqa: E402
from softprompt.prompts.tuned import TunedPrompt  # noqa: E402
from softprompt.utils.hardware import describe, resolve_dtype  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", default=str(ROOT / "runs" / "demo"))
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="auto", help="auto, float32 or bfloat16")
    parser.add_argument("--peft-dtype", help="the base dtype of PEFT's side (default: --dtype)")
    args = parser.parse_args()
    args.dtype = resolve_dtype(args.dtype)
    print(json.dumps({"machine": describe(), "dtype": args.dtype}), flush=True)
    if not Path(args.prompt, "adapter_model.safetensors").is_file():
        sys.exit(f"{args.prompt}: no trained prompt (run `make demo` first, or pass --prompt)")
    base = load_base("smollm2-135m", args.dtype)
    tuned = TunedPrompt.from_pretrained(args.prompt, base=base)
    rows = load_named("raft/twitter_complaints", "test")[1][: args.limit]
    gold = [tuned.task.label_index(row) for row in rows]

    start = time.perf_counter()
    scores, _ = label_scores(tuned.lm, tuned.encoder, rows, args.batch_size)
    ours_s = time.perf_counter() - start
    predicted = scores.argmax(1).tolist()
    ours = {
        "side": "softprompt-rank",
        "dtype": args.dtype,
        "n": len(rows),
        "examples_per_s": len(rows) / ours_s,
        **classification_metrics(predicted, gold, len(tuned.task.labels)),
    }
    print(json.dumps(ours), flush=True)

    # The same packed scoring with no prompt cache (the prompt recomputed in every forward), then the reference
    # path (the prompt concatenated in front of one padded sequence per label, as PEFT's model runs it).
    same = {}
    for side, mode in (
        ("softprompt-packed-nocache", ScoringMode.PACKED_INLINE),
        ("softprompt-uncached", ScoringMode.REFERENCE),
    ):
        start = time.perf_counter()
        other, _ = label_scores(tuned.lm, tuned.encoder, rows, args.batch_size, mode)
        seconds = time.perf_counter() - start
        differing = sum(a != b for a, b in zip(other.argmax(1).tolist(), predicted))
        same[side] = differing == 0
        print(
            json.dumps(
                {
                    "side": side,
                    "examples_per_s": len(rows) / seconds,
                    "same_predictions": same[side],
                    "differing_predictions": differing,
                    "max_score_diff": float((other - scores).abs().max()),
                }
            ),
            flush=True,
        )

    from peft import PeftModel

    peft_dtype = resolve_dtype(args.peft_dtype or args.dtype)
    model, tokenizer = peft_base("smollm2-135m", peft_dtype)
    peft = PeftModel.from_pretrained(model, args.prompt)
    words = [w.lower() for w in tuned.task.label_words]
    generated = []
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in chunks(rows, args.batch_size):
            ids, mask = pad_left([tuned.encoder.input_ids(row) for row in batch], tokenizer.pad_token_id,
                                  device="cpu")
            out = peft.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            for row in out[:, ids.shape[1] :]:
                text = tokenizer.decode(row, skip_special_tokens=True).strip().lower()
                generated.append(words.index(text) if text in words else -1)
    peft_s = time.perf_counter() - start
    theirs = {
        "side": "peft-generate",
        "dtype": peft_dtype,
        "n": len(rows),
        "examples_per_s": len(rows) / peft_s,
        "unmatched": generated.count(-1),
        **classification_metrics(generated, gold, len(words)),
    }
    print(json.dumps(theirs), flush=True)
    print(
        json.dumps(
            {
                "ratio": "ours/peft",
                "dtypes": f"{args.dtype}/{peft_dtype}",
                "cpu_capability": describe()["cpu_capability"],
                "throughput": ours["examples_per_s"] / theirs["examples_per_s"],
                "nocache_same_predictions": same["softprompt-packed-nocache"],
                "uncached_same_predictions": same["softprompt-uncached"],
            }
        )
    )


if __name__ == "__main__":
    main()
