"""How `make demo`'s recipe was chosen: a small grid on the dev split only, never the test rows.

Every configuration trains on RAFT twitter_complaints' 40/10 train/dev split (the seed also draws the split,
so each seed scores on different dev tweets) and keeps its best prompt by dev loss; the score of a
configuration is its mean best dev macro-F1 over the seeds (ties: mean dev loss). One line per run goes to
OUTPUT/recipes.csv as it ends, so a rerun skips what is done.

    python experiments/demo_recipe.py [--model smollm2-135m] [--seeds 1,2,3] [--output runs/demo-recipe]
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

from softprompt.hardware import describe  # noqa: E402
from softprompt.models import load_base  # noqa: E402
from softprompt.results_table import read_csv, write_csv  # noqa: E402
from softprompt.train import TrainConfig, fit  # noqa: E402

GRID = {  # what a user would try first: prompt length and init, with the seed recipe's optimiser
    "num_virtual_tokens": (8, 20),
    "init": ("text", "class-label", "sampled-vocab"),
    "optimizer_lr": (("adamw", 3e-2),),
}
COLUMNS = ("num_virtual_tokens", "init", "optimizer", "lr", "seed", "best_step", "dev_loss", "dev_accuracy",
           "dev_macro_f1")  # fmt: skip


def best_eval(folder: Path) -> dict:
    """The metrics record with the lowest dev loss: the one `--keep-best loss` kept."""
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return min((r for r in records if "eval_loss" in r), key=lambda r: r["eval_loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--max-steps", type=int, default=50)
    parser.add_argument("--output", default="runs/demo-recipe")
    args = parser.parse_args()
    output = Path(args.output)
    target = output / "recipes.csv"
    rows = read_csv(target, ("num_virtual_tokens", "seed", "best_step")) if target.is_file() else []
    done = {(r["num_virtual_tokens"], r["init"], r["optimizer"], float(r["lr"]), r["seed"]) for r in rows}
    model, tokenizer = load_base(args.model, args.dtype)
    print(json.dumps({"machine": describe(), "dtype": str(model.dtype).removeprefix("torch.")}), flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    for tokens, init, (optimizer, lr), seed in itertools.product(*GRID.values(), seeds):
        if (tokens, init, optimizer, lr, seed) in done:
            continue
        folder = output / "runs" / f"len{tokens}-{init}-{optimizer}-{lr:g}-seed{seed}"
        config = TrainConfig(
            model=args.model, dtype=args.dtype, task="raft/twitter_complaints", dev_fraction=0.2,
            num_virtual_tokens=tokens, init=init, optimizer=optimizer, lr=lr, max_steps=args.max_steps,
            keep_best="loss", seed=seed, output=str(folder), progress=False,
        )  # fmt: skip
        fit(config, base=(model, tokenizer), overwrite=True)
        best = best_eval(folder)
        rows.append({"num_virtual_tokens": tokens, "init": init, "optimizer": optimizer, "lr": lr, "seed": seed,
                     "best_step": best["step"], "dev_loss": best["eval_loss"], "dev_accuracy": best["accuracy"],
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
    return row["num_virtual_tokens"], row["init"], row["optimizer"], float(row["lr"])


if __name__ == "__main__":
    main()
