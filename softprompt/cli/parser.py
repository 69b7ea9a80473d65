"""The argparse parser. `train`, `sweep` and `transfer` take every TrainConfig field as a flag, and `serve` every
ServeConfig field, with the help text and default the field carries; `eval`, `predict` and `ensemble` share the
options of applying prompts."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from ..models.base import MODEL_HELP
from ..serve.config import REPLICA_OPTIONS, ServeConfig, field_type
from ..training.train_config import DESIGN_OPTIONS, DTYPE_HELP, TrainConfig
from ..utils.hardware import DEVICE_HELP, DTYPE_CHOICES


def flag(name: str) -> str:
    """A parameter's flag: `init_text` -> `--init-text`."""
    return "--" + name.replace("_", "-")


def _add_field(parser, field: dataclasses.Field, hint: object, default: object) -> None:
    """A config field as a flag of its type, with the help text the field carries (a field without a default
    is a required flag)."""
    help, kind = field.metadata["help"], field_type(hint)
    if kind is bool:
        parser.add_argument(flag(field.name), action=argparse.BooleanOptionalAction, default=default, help=help)
    elif field.default is dataclasses.MISSING:
        parser.add_argument(flag(field.name), type=kind, required=True, help=help)
    else:
        parser.add_argument(flag(field.name), type=kind, default=default, help=f"{help} (default: {field.default})")


def add_config_options(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """Every TrainConfig field (or those named in `only`) as a flag, defaults left None so that a TOML file can
    fill what flags don't."""
    parser.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file (flags override it)")
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        if only is None or field.name in only:
            _add_field(parser, field, hints[field.name], None)


PROMPT_FOLDER = "prompt folder written by `softprompt train` or `design` (or PEFT with softprompt.json)"


def add_prompt_options(parser: argparse.ArgumentParser, several: bool = False, prompts: str | None = None) -> None:
    """The prompt folder(s) to apply, the rows to apply them to, and the base model to run them on: one folder,
    or with `prompts` (their help) a list of them; `several` for an ensemble's members."""
    if several:
        parser.add_argument("prompts", nargs="+", help="two or more prompt folders of the same task")
    elif prompts:
        parser.add_argument("prompts", nargs="+", help=prompts)
    else:
        parser.add_argument("prompt", help=PROMPT_FOLDER)
    parser.add_argument("--data", help="labelled file to read (.csv, .tsv, .jsonl, hf:...)")
    parser.add_argument("--task", help="read a shipped task's split instead of --data")
    parser.add_argument("--split", default="test", help="split of --task (default: test)")
    parser.add_argument("--data-dir", help="folder holding the shipped tasks' files")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N rows")
    parser.add_argument("--batch-size", type=int, default=32, help="rows x members per forward" if several else None)
    whose = "prompts were" if several else "prompt was"
    parser.add_argument("--model", help=f"{MODEL_HELP} (default: the one the {whose} trained on)")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help=DTYPE_HELP)
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    if not several:
        parser.add_argument("--length-normalize", action="store_true", help="rank labels by mean, not summed, log-prob")
        parser.add_argument("--temperature", type=float, default=0.0,
                            help="text-to-text tasks: sample at this temperature (default 0: greedy)")  # fmt: skip
        parser.add_argument("--top-p", type=float, default=1.0, help="text-to-text tasks: nucleus sampling's top-p")
        parser.add_argument("--seed", type=int, default=0, help="text-to-text tasks: the sampling seed")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="show a progress bar on stderr as rows are scored")  # fmt: skip


def add_grid_options(parser: argparse.ArgumentParser, table: str) -> None:
    """The held-out rows of a grid of runs, redrawing its plot, and every TrainConfig field."""
    parser.add_argument("--test", help="labelled file for the held-out score (default: --task's --test-split)")
    parser.add_argument("--test-split", default="test", help="split of --task used for the held-out score")
    parser.add_argument("--test-limit", type=int, default=0, help="score on the first N held-out rows only")
    parser.add_argument("--plot", metavar="CSV", help=f"only redraw the PNG beside an existing {table}")
    add_config_options(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softprompt",
        description="Prompt tuning for frozen language models: train, evaluate and apply soft prompts.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a soft prompt", description="Train a soft prompt on a frozen model.")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its newest checkpoint")
    train.add_argument("--overwrite", action="store_true", help="start over in an --output that holds a run")
    add_config_options(train)
    design = sub.add_parser(
        "design",
        help="prompt design: K training examples in front of each input, no training (the paper's baseline)",
        description="Prompt design, GPT-3 style: K labelled training examples (seeded, labels in turn) written "
        "in front of each input, saved as a prompt folder that eval, serve and ensemble read like a tuned one. "
        "Takes train's data, model, seed and output options (a --config file may hold train's others: unused).",
    )
    design.add_argument("--overwrite", action="store_true", help="replace the prompt in --output")
    add_config_options(design, DESIGN_OPTIONS)
    evaluate = sub.add_parser(
        "eval",
        help="held-out metrics as one JSON line per prompt",
        description="Evaluate prompts: one JSON line each; several are scored on the same rows and set side by "
        "side, with the majority class, in a table on stderr.",
    )
    add_prompt_options(evaluate, prompts=f"one or more: {PROMPT_FOLDER}")
    evaluate.add_argument(
        "--method",
        choices=("rank", "generate"),
        default="rank",
        help="rank labels by log-likelihood, or generate and match the label word",
    )
    evaluate.add_argument(
        "--png",
        metavar="FILE",
        help="draw the confusion matrix as a heat map (several prompts: FILE's name gets each folder's name)",
    )
    evaluate.add_argument(
        "--record",
        action="store_true",
        help="also keep the metrics in each folder (softprompt.json's evaluations, by data) and its model card",
    )
    predict = sub.add_parser("predict", help="write predictions to CSV or JSONL", description="Predict labels.")
    add_prompt_options(predict)
    predict.add_argument("--output", required=True, help="predictions file (.csv or .jsonl)")
    predict.add_argument("--server", metavar="URL", help="ask a `softprompt serve` server; PROMPT is its task name")
    predict.add_argument("--api-key-file", help="with --server: the server's API key, sent as a bearer token")
    harness = sub.add_parser(
        "harness",
        help="the prompt's task as an lm-evaluation-harness task over local files",
        description="Write the rows eval would read, rendered by the prompt's template, and an lm-eval task "
        "YAML over them (multiple_choice with acc and acc_norm, or generate_until with exact match) to OUTPUT; "
        "print the lm_eval command lines that score the prompt through a server or the harness's hf model.",
    )
    add_prompt_options(harness)
    harness.add_argument("--output", required=True, help="folder for NAME.yaml and NAME.jsonl (lm_eval --include_path)")
    harness.add_argument("--name", help="the harness task's name (default: softprompt_ and the folder's name)")
    _serve_parser(sub)
    _toolbox_parsers(sub)
    return parser


def _serve_parser(sub) -> None:
    """`serve`: every ServeConfig field as a flag with the field's default; the replicas' in a group."""
    serve = sub.add_parser(
        "serve",
        help="serve many prompts over HTTP",
        description="Serve prompts over HTTP: one "
        "frozen model, every prompt folder under --prompts, mixed-task batches.",
    )
    replicas = serve.add_argument_group("replicas (Ray Serve)")
    hints = typing.get_type_hints(ServeConfig)
    for field in dataclasses.fields(ServeConfig):
        _add_field(replicas if field.name in REPLICA_OPTIONS else serve, field, hints[field.name], field.default)


def _toolbox_parsers(sub) -> None:
    """The paper's toolbox: ensembles, nearest-token inspection, length/init sweeps, zero-shot transfer."""
    ensemble = sub.add_parser(
        "ensemble",
        help="several prompts for one task, in one forward",
        description="Evaluate K prompts of one task together (one batched forward).",
    )
    add_prompt_options(ensemble, several=True)
    ensemble.add_argument(
        "--mode", choices=("vote", "mean"), default="vote", help="majority vote, or the highest mean probability"
    )
    inspect = sub.add_parser(
        "inspect",
        help="nearest vocabulary tokens of each prompt vector",
        description="Show the tokens nearest (cosine) to each prompt position.",
    )
    inspect.add_argument("prompt", help="prompt folder")
    inspect.add_argument("--k", type=int, default=5, help="neighbours per position")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.add_argument("--png", help="also draw a heat map to this PNG")
    inspect.add_argument("--model", help=f"{MODEL_HELP} (default: the one the prompt was trained on)")
    inspect.add_argument("--device", default="auto", help=DEVICE_HELP)
    sweep = sub.add_parser(
        "sweep",
        help="grid over prompt length, init and seed -> CSV + PNG",
        description="Train one prompt per (length, init, seed), evaluate each on held-out rows, "
        "write OUTPUT/sweep.csv and OUTPUT/sweep.png (score vs length, one line per init).",
    )
    sweep.add_argument("--lengths", default="1,5,20,100", help="comma-separated prompt lengths")
    sweep.add_argument("--inits", default="random-uniform,sampled-vocab,class-label", help="comma-separated inits")
    sweep.add_argument("--seeds", default="0", help="comma-separated seeds")
    add_grid_options(sweep, "sweep.csv")
    compare = sub.add_parser(
        "compare",
        help="prompt tuning vs model tuning vs prompt design over models and seeds -> CSV + PNG",
        description="The paper's Figure 1 for one task: one run per (model, method, seed), each scored on the "
        "dev rows and on held-out rows, in OUTPUT/compare.csv and OUTPUT/compare.png (held-out macro-F1 "
        "against parameters, one line per method, mean and range over seeds, majority class beside). A rerun "
        "skips the runs in the CSV and resumes a run cut short from its checkpoint.",
    )
    compare.add_argument("--models", default="smollm2-135m", help="comma-separated models (aliases, folders)")
    compare.add_argument("--methods", default="prompt-tuning,model-tuning,prompt-design", help="comma-separated")
    compare.add_argument("--seeds", default="0", help="comma-separated seeds")
    compare.add_argument("--markdown", action="store_true", help="print the summary as a Markdown table")
    add_grid_options(compare, "compare.csv")
    _transfer_parser(sub)


def _transfer_parser(sub) -> None:
    """§5's zero-shot transfer: a training task, then the targets it is scored on."""
    transfer = sub.add_parser(
        "transfer",
        help="train on one task, evaluate zero-shot on another",
        description="Train a prompt on one data set, then evaluate it zero-shot on others: a file whose columns "
        "are mapped onto the training fields (e.g. QQP -> MRPC), or shipped tasks with the training task's fields "
        "(e.g. squad -> squadshifts/reddit); one JSON line per target.",
    )
    transfer.add_argument("--target", help="labelled file of the target task (with --target-map)")
    transfer.add_argument(
        "--target-map",
        help='training field=target column pairs, e.g. "question1=#1 String,question2=#2 String,is_duplicate=Quality"',
    )
    transfer.add_argument(
        "--target-tasks",
        help="comma-separated shipped tasks to evaluate on, each NAME or NAME:SPLIT (default split test), e.g. "
        '"squad:dev,squadshifts/new_wiki,squadshifts/reddit,squadshifts/amazon,mrqa/relation_extraction"',
    )
    transfer.add_argument("--target-limit", type=int, default=0, help="evaluate on the first N rows of each target")
    transfer.add_argument("--overwrite", action="store_true", help="start over in an --output that holds a run")
    add_config_options(transfer)
