"""How `make demo`'s recipe was chosen: a small grid on the dev split only, never the test rows.

Every configuration trains on RAFT twitter_complaints' 40/10 train/dev split (the seed also draws the split,
so each seed scores on different dev tweets) and keeps its best prompt by dev loss; the score of a
configuration is its mean best dev macro-F1 over the seeds (ties: mean dev loss). One line per run goes to
OUTPUT/recipes.csv as it ends, so a rerun skips what is done.

    python experiments/demo_recipe.py --lengths 8,20 --inits text,class-label,sampled-vocab --seeds 1,2
    python experiments/demo_recipe.py --lengths 8 --inits text --optimizers adamw:0.03,adafactor:0.3 \
        --steps 50,100 --seeds 1,2,3     # the second round, on the first round's winner
    python experiments/demo_recipe.py --lengths 8 --inits text --verbalizers "complaint=yes,no complaint=no" \
        --seeds 1,2,3                    # the third: one-token label words
    python experiments/demo_recipe.py --lengths 8 --inits prompt-design \
        --optimizers adamw:0.003,adamw:0.01,adamw:0.03 --output runs/recipe-design-smollm2    # the fourth:
    python experiments/demo_recipe.py --model qwen2.5-0.5b --dtype float32 --lengths 8 --inits prompt-design \
        --optimizers adamw:0.001,adamw:0.003,adamw:0.01 --steps 30 --seeds 1 --output runs/recipe-design-qwen0.5b
                                         # the prompt started from 4 examples (its length is theirs, not --lengths)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SOFTPROMPT_DATA", str(ROOT.parent / "shared" / "data"))

from softprompt.models.base import load_base  # noqa: E402
from softprompt.toolbox.results_table import read_csv, write_csv  # noqa: E402
from softprompt.training.train import TrainConfig, fit  # noqa: E402
from softprompt.utils.hardware import describe  # noqa: E402

COLUMNS = ("num_virtual_tokens", "init", "optimizer", "lr", "max_steps", "verbalizer", "seed", "best_step", "dev_loss",
           "dev_accuracy", "dev_macro_f1")  # fmt: skip
INTEGERS = ("num_virtual_tokens", "max_steps", "seed", "best_step")


def best_eval(folder: Path) -> dict:
    """The metrics record with the lowest dev loss: the one `--keep-best loss` kept."""
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return min((r for r in records if "eval_loss" in r), key=lambda r: r["eval_loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--lengths", default="8,20", help="prompt lengths")
    parser.add_argument("--inits", default="text,class-label,sampled-vocab")
    parser.add_argument("--optimizers", default="adamw:0.03", help="optimizer:lr pairs")
    parser.add_argument("--steps", default="50", help="max steps (the prompt kept is the one of lowest dev loss)")
    parser.add_argument("--verbalizers", default="", help="';'-separated label -> word maps ('' = the task's words)")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--output", default="runs/demo-recipe")
    args = parser.parse_args()
    output = Path(args.output)
    target = output / "recipes.csv"
    rows = read_csv(target, INTEGERS) if target.is_file() else []
    done = {(*_config(r), r["seed"]) for r in rows}
    model, tokenizer = load_base(args.model, args.dtype)
    print(json.dumps({"machine": describe(), "dtype": str(model.dtype).removeprefix("torch.")}), flush=True)
    optimizers = [(name, float(lr)) for name, lr in (pair.split(":") for pair in args.optimizers.split(","))]
    inits = args.inits.split(",")
    verbalizers = args.verbalizers.split(";")
    grid = itertools.product(_ints(args.lengths), inits, optimizers, _ints(args.steps), verbalizers, _ints(args.seeds))
    for tokens, init, (optimizer, lr), steps, verbalizer, seed in grid:
        if (tokens, init, optimizer, lr, steps, verbalizer, seed) in done:
            continue
        words = "-" + "-".join(part.split("=")[1] for part in verbalizer.split(",")) if verbalizer else ""
        folder = output / "runs" / f"len{tokens}-{init}-{optimizer}-{lr:g}-steps{steps}{words}-seed{seed}"
        config = TrainConfig(
            model=args.model, dtype=args.dtype, task="raft/twitter_complaints", dev_fraction=0.2,
            num_virtual_tokens=tokens, init=init, optimizer=optimizer, lr=lr, max_steps=steps,
            verbalizer=verbalizer or None, keep_best="loss", seed=seed, output=str(folder), progress=False,
        )  # fmt: skip
        fit(config, base=(model, tokenizer), overwrite=True)
        best = best_eval(folder)
        rows.append({"num_virtual_tokens": tokens, "init": init, "optimizer": optimizer, "lr": lr,
                     "max_steps": steps, "verbalizer": verbalizer, "seed": seed, "best_step": best["step"],
                     "dev_loss": best["eval_loss"], "dev_accuracy": best["accuracy"],
                     "dev_macro_f1": best["macro_f1"]})  # fmt: skip
        write_csv(rows, target, COLUMNS)
        print(json.dumps(rows[-1]), flush=True)
    ranking = {}
    for key, group in itertools.groupby(sorted(rows, key=_config), key=_config):
        group = list(group)
        f1, loss = (statistics.mean(r[column] for r in group) for column in ("dev_macro_f1", "dev_loss"))
        ranking[key] = (f1, -loss)
    for key, (f1, neg_loss) in sorted(ranking.items(), key=lambda item: item[1], reverse=True):
        print(f"{key}: mean dev macro-F1 {f1:.3f}, mean dev loss {-neg_loss:.3f}")


def _config(row: dict) -> tuple:
    keys = ("num_virtual_tokens", "init", "optimizer")
    return *(row[key] for key in keys), float(row["lr"]), row["max_steps"], row.get("verbalizer", "")


def _ints(text: str) -> list[int]:
    return [int(item) for item in text.split(",")]


if __name__ == "__main__":
    main()
