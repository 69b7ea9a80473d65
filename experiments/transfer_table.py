"""docs/transfer.md's table from the records experiments/transfer.sh keeps, and the script's choices.

    python experiments/transfer_table.py keep RUN_FOLDER RECORD_DIR   # the run's record into the kept tree
    python experiments/transfer_table.py choose RUNG_DIR              # the records to score: each method's best lr
    python experiments/transfer_table.py unscored TASK SPLIT N DIR... # those of DIR... not yet scored there
    python experiments/transfer_table.py page RECORDS N [PARKED]      # docs/transfer.md, from every rung

Each trained method's learning rate is the one whose kept prompt (or model) has the best dev F1 (its
softprompt.json's `metrics`, from the dev rows carved from training): no held-out row is read to choose it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from softprompt.prompts.checkpoint import CONFIG, WEIGHTS  # noqa: E402
from softprompt.prompts.model_card import record_name  # noqa: E402
from softprompt.prompts.record import FolderRecord  # noqa: E402

METHODS = ("prompt-tuning", "model-tuning", "prompt-design")
PROMPT_FILES = (CONFIG, WEIGHTS)  # a prompt folder's own files, kept with its record
GRID = 3  # learning rates per trained method (experiments/transfer.sh's lrs)
SETS = (("squad", "dev", "SQuAD (dev)", "Wiki"), ("squadshifts/new_wiki", "test", "SQuAD-shifts new_wiki", "Wiki"),
        ("squadshifts/reddit", "test", "SQuAD-shifts reddit", "Reddit"),
        ("squadshifts/amazon", "test", "SQuAD-shifts amazon", "Reviews"),
        ("mrqa/relation_extraction", "test", "RE (MRQA)", "Wiki"))  # fmt: skip
# The paper's Table 1 (T5.1.1 XXL, F1 means over 3 runs), model tuning / prompt tuning, of the sets not here.
PAPER_OTHERS = "TextbookQA 54.3 / 66.8, BioASQ 77.9 / 79.1, RACE 59.8 / 60.7, DuoRC 68.9 / 67.7, DROP 68.9 / 67.1"


def kept_runs(method_dir: Path) -> list[Path]:
    """A trained method's finished runs on a rung, one per learning rate."""
    return [f for f in sorted(method_dir.glob("lr-*")) if (f / "softprompt.json").is_file()]


def chosen(rung: Path) -> dict[str, Path]:
    """Per method, the folder it is scored with: the trained methods' best-dev-F1 learning rate; design's one."""
    picked = {}
    for method in METHODS[:2]:
        runs = kept_runs(rung / method)
        if runs:
            picked[method] = max(runs, key=lambda f: FolderRecord.read(f).metrics.get("f1", -1.0))
    if (rung / "prompt-design" / "softprompt.json").is_file():
        picked["prompt-design"] = rung / "prompt-design"
    return picked


def keep(folder: Path, kept: Path) -> None:
    """Copy a run's record (softprompt.json: a few KB, committed) into `kept`, with a prompt's own files (PEFT's
    two: KBs), so a later checkout scores the prompt without training it again; a model-tuned run's weights
    (GBs) stay behind. A record kept before (from a run this checkout trained again) keeps its training fields;
    the held-out scores of both are merged."""
    record = FolderRecord.read(folder)
    if (kept / "softprompt.json").is_file():
        earlier = FolderRecord.read(kept)
        earlier.evaluations = {**earlier.evaluations, **record.evaluations}
        record = earlier
    kept.mkdir(parents=True, exist_ok=True)
    if not record.method.trains_model:
        for name in PROMPT_FILES:
            if (folder / name).is_file() and not (kept / name).is_file():
                shutil.copyfile(folder / name, kept / name)
    record.write(kept)


def scored_name(task: str, split: str, n: int) -> str:
    """What `eval --task TASK --split SPLIT --limit N --record` files its figures under in a squad folder."""
    return record_name(None, task if task != "squad" else None, split, n)


def unscored(task: str, split: str, n: int, folders: list[str]) -> list[str]:
    return [f for f in folders if scored_name(task, split, n) not in FolderRecord.read(f).evaluations]


HEADER = """# Domain shift: the paper's Table 1 on our ladder

Written by `experiments/transfer.sh` (through `experiments/transfer_table.py`); do not edit by hand.

The paper (Lester et al. 2021, §5, Table 1) trains on SQuAD and scores zero-shot on MRQA 2019's out-of-domain
sets: prompt tuning's F1 is ahead of model tuning's on four of six (TextbookQA +12.5, BioASQ +1.2, RACE +0.9,
RE +0.4), behind on two (DuoRC −1.2, DROP −1.8), and level in domain (SQuAD 94.8 against 94.9), on T5.1.1 XXL.
Of its sets only RelationExtraction is here offline; the SQuAD-shifts sets (new Wikipedia, Reddit, Amazon
reviews; Miller et al. 2020) stand in for the others.

Each rung: 1,000 seeded questions of SQuAD's train subset, 50 of them carved out as dev; prompt tuning (20
virtual tokens, the task's init text, AdamW) and model tuning (every weight, AdamW) for 150 steps of 8, keeping
the step with the best dev F1, each at the learning rate of a three-value grid with the best dev F1; prompt
design with 2 demonstrations. Seed 42, and a float32 base on every CPU, so that cells run on different sessions'
machines are computed alike. The cost measured for one cell (135M prompt tuning, a 2-core AVX2 EPYC): 1,576 s
to train and 513 s to score one set of 500. From that cell alone, and taking model tuning at twice prompt
tuning's time and 0.5B at four times 135M's, the whole grid comes to about 30 hours on such a machine. Most of
that is the 0.5B rung. Model tuning's cost is not measured yet.

Scores: exact match / F1 (SQuAD v1.1's normalisation, best over the references, x100) of greedy answers on the
first {n} questions of each set; contexts cut to 100 words around the question (as in training).
"""


def comparison(output: Path, n: int) -> str:
    """The paper's claim, point by point: where is prompt tuning's out-of-domain F1 ahead of model tuning's?"""
    lines = ["## Against the paper", ""]
    for rung in sorted(p for p in output.iterdir() if p.is_dir()):
        picked = chosen(rung)
        if not {"prompt-tuning", "model-tuning"} <= picked.keys():
            continue
        gaps = {}
        for task, split, shown, _ in SETS:
            f1 = [FolderRecord.read(picked[m]).evaluations.get(scored_name(task, split, n)) for m in METHODS[:2]]
            if all(f1):
                gaps[shown] = 100 * (f1[0]["f1"] - f1[1]["f1"])
        if gaps:
            out_of_domain = {k: v for k, v in gaps.items() if k != "SQuAD (dev)"}
            ahead = [k for k, v in out_of_domain.items() if v > 0]
            lines.append(f"- {rung.name}: prompt tuning's F1 is ahead of model tuning's on {len(ahead)} of "
                         f"{len(out_of_domain)} out-of-domain sets ({', '.join(ahead) or 'none'}); in domain "
                         f"(SQuAD dev) the gap is {gaps.get('SQuAD (dev)', float('nan')):+.1f} (paper: −0.1). "
                         + "; ".join(f"{k} {v:+.1f}" for k, v in out_of_domain.items())
                         + (" (paper RE: +0.4)." if "RE (MRQA)" in out_of_domain else "."))  # fmt: skip
    return "\n".join(lines) + "\n"


def page(output: Path, n: int, parked_root: Path | None = None) -> str:
    return "\n".join([HEADER.format(n=n), status(output, n, parked_root), "## Ours", "", table(output, n),
                      comparison(output, n), f"The paper's other sets (model / prompt F1): {PAPER_OTHERS}.",
                      ""])  # fmt: skip


def status(output: Path, n: int, parked_root: Path | None = None) -> str:
    """What the kept records hold so far, said before the table: a grid cut short shows as such."""
    lines, complete = [], []
    for rung in sorted(p for p in output.iterdir() if p.is_dir()):
        runs = {m: len(kept_runs(rung / m)) for m in METHODS[:2]}
        design = (rung / "prompt-design" / "softprompt.json").is_file()
        picked = chosen(rung)
        scores = sum(scored_name(task, split, n) in FolderRecord.read(folder).evaluations
                     for folder in picked.values() for task, split, _, _ in SETS)  # fmt: skip
        complete.append(min(runs.values()) == GRID and design and scores == len(METHODS) * len(SETS))
        lines.append(f"- {rung.name}: prompt tuning {runs['prompt-tuning']} of {GRID} learning rates, model tuning "
                     f"{runs['model-tuning']} of {GRID}, prompt design {'built' if design else 'not built'}; "
                     f"{scores} of {len(METHODS) * len(SETS)} held-out scores")  # fmt: skip
    lines += [f"- begun, parked to resume: {cell}" for cell in parked(parked_root)] if parked_root else []
    if len(complete) >= 2 and all(complete):
        return "Status: complete.\n"
    return "\n".join(["**Status: not finished.** The grid runs in pieces across sessions. A learning rate is "
                      f"provisional until its method's {GRID} runs are kept; a score shows as soon as it is kept. "
                      "So far:",
                      "", *lines, ""])  # fmt: skip


def parked(root: Path) -> list[str]:
    """The unfinished prompt-tuning runs `transfer.sh park` kept, each with the step its newest checkpoint holds."""
    return [f"{run.parent.relative_to(root)} at step {int(max(run.glob('step-*')).name.split('-')[1])}"
            for run in sorted(root.glob("*/*/lr-*/checkpoints")) if any(run.glob("step-*"))]  # fmt: skip


def table(output: Path, n: int) -> str:
    lines = []
    for rung in sorted(p for p in output.iterdir() if p.is_dir()):
        picked = chosen(rung)
        if not picked:
            continue
        lines += [f"### {rung.name}", "", _runs(picked), "",
                  "| set | domain | " + " | ".join(f"{m} EM / F1" for m in picked) + " | prompt − model F1 |",
                  "|---|---|" + "---|" * (len(picked) + 1)]  # fmt: skip
        for task, split, shown, domain in SETS:
            cells, f1 = [], {}
            for method, folder in picked.items():
                figures = FolderRecord.read(folder).evaluations.get(scored_name(task, split, n))
                cells.append(f"{100 * figures['exact_match']:.1f} / {100 * figures['f1']:.1f}" if figures else "")
                if figures:
                    f1[method] = 100 * figures["f1"]
            gap = f"{f1['prompt-tuning'] - f1['model-tuning']:+.1f}" if len(f1.keys() & set(METHODS[:2])) == 2 else ""
            lines.append(f"| {shown} | {domain} | " + " | ".join(cells) + f" | {gap} |")
        lines.append("")
    return "\n".join(lines)


def _runs(picked: dict[str, Path]) -> str:
    """How each scored folder was made: lr (and how chosen), training questions, steps, seconds."""
    parts = []
    for method, folder in picked.items():
        record = FolderRecord.read(folder)
        config = record.train_config or {}
        if method == "prompt-design":
            parts.append(f"{method}: {record.shots} demonstrations, untrained")
            continue
        grid = kept_runs(folder.parent)
        dev = ", ".join(f"{g.name[3:]}: {FolderRecord.read(g).metrics.get('f1', 0) * 100:.1f}" for g in grid)
        choice = "best dev F1 of" if len(grid) >= GRID else "provisional: the grid is not all run;"
        parts.append(f"{method}: lr {config.get('lr')} ({choice} {dev}), kept step {record.step} of "
                     f"{config.get('max_steps')}, {config.get('train_limit')} questions less dev, "
                     f"{record.train_seconds:.0f} s, base {record.base_dtype}")  # fmt: skip
    return "; ".join(parts) + "."


def main(argv: list[str]) -> None:
    command, *rest = argv
    if command == "keep":
        keep(Path(rest[0]), Path(rest[1]))
    elif command == "choose":
        print(" ".join(str(f) for f in chosen(Path(rest[0])).values()))
    elif command == "unscored":
        print(" ".join(unscored(rest[0], rest[1], int(rest[2]), rest[3:])))
    elif command == "page":
        print(page(Path(rest[0]), int(rest[1]), Path(rest[2]) if len(rest) > 2 else None), end="")
    else:
        raise SystemExit(f"unknown command {command!r} (keep, choose, unscored, page)")


if __name__ == "__main__":
    main(sys.argv[1:])
