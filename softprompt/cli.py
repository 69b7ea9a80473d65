"""`softprompt train | eval | predict`: argparse front end. User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import sys
import tomllib
import warnings
from pathlib import Path

from .errors import ParameterError, SoftpromptError

TRAIN_HELP = {
    "model": "base model: smollm2-135m (default), gemma3-270m, a local HF folder or a hub id",
    "dtype": "dtype of the frozen base: float32 or bfloat16 (the prompt always trains in float32)",
    "task": "a shipped task: raft/twitter_complaints, glue/sst2 (files from --data-dir / $SOFTPROMPT_DATA)",
    "train": "labelled training file (.csv, .tsv, .jsonl) or hf:NAME[:CONFIG]:SPLIT",
    "eval": "labelled file evaluated during training (else --dev-fraction carves one from --train)",
    "data_dir": "folder holding the shipped tasks' files (default $SOFTPROMPT_DATA, else the HF hub)",
    "dev_fraction": "carve this stratified fraction of the training rows out as the eval set",
    "train_limit": "train on a stratified, seeded sample of about N training rows (0 = all)",
    "template": 'input template with {field} placeholders, e.g. "Tweet text : {Tweet text} Label : "',
    "label_field": "column holding the label",
    "labels": "comma-separated label values (default: those found in the training file; \\, escapes a comma)",
    "verbalizer": 'label value -> word, e.g. "0=negative,1=positive"',
    "num_virtual_tokens": "number of prompt vectors",
    "init": "random-uniform | first-vocab | sampled-vocab | text | class-label "
    "(default: text when there is an init text, else class-label)",
    "init_text": "text for --init text (default: the task's)",
    "init_range": "half-width of the random-uniform init",
    "optimizer": "adamw (seed recipe, lr 3e-2, linear schedule) or adafactor (paper, lr 0.3, constant)",
    "lr": "learning rate (default: 3e-2 for adamw, 0.3 for adafactor)",
    "weight_decay": "weight decay (default: 0.01 for adamw, 1e-5 for adafactor)",
    "warmup_steps": "linear warmup steps (adamw)",
    "epochs": "passes over the training rows",
    "max_steps": "stop after this many optimizer steps (overrides --epochs)",
    "batch_size": "rows per micro-batch",
    "eval_batch_size": "rows per evaluation batch",
    "grad_accum": "micro-batches per optimizer step",
    "max_grad_norm": "clip the prompt's gradient norm (0 = off)",
    "max_length": "max tokens of input + label; the input is cut, never the label",
    "eval_every": "evaluate every N steps (0 = each epoch)",
    "keep_best": "keep the prompt with the best eval loss, accuracy or macro_f1",
    "patience": "with --keep-best, stop after N evaluations without improvement",
    "save_steps": "also checkpoint every N steps (always at each epoch end)",
    "bucket": "batch rows of similar length together (less padding)",
    "gradient_checkpointing": "recompute activations in the backward pass (long inputs, less memory)",
    "seed": "seed for init, dev split and batch order: same seed, same prompt",
    "output": "output folder: the prompt (PEFT format), metrics.jsonl, curves.png, checkpoints/",
    "progress": "show a progress bar",
}


def _train_parser(sub) -> None:
    parser = sub.add_parser("train", help="train a soft prompt", description="Train a soft prompt on a frozen model.")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its newest checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="start over in an --output that holds a run")
    _add_train_options(parser)


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    """Every TrainConfig field as a flag (defaults left None, so a TOML file can fill what flags don't)."""
    from .train import TrainConfig

    parser.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file (flags override it)")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = {"int": int, "float": float}.get(str(field.type).split(" |")[0], str)
        if field.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=TRAIN_HELP[field.name])
        else:
            parser.add_argument(
                flag, type=kind, default=None, help=f"{TRAIN_HELP[field.name]} (default: {field.default})"
            )


def _prompt_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="prompt folder written by `softprompt train` (or PEFT with softprompt.json)")
    parser.add_argument("--data", help="labelled file to read (.csv, .tsv, .jsonl, hf:...)")
    parser.add_argument("--task", help="read a shipped task's split instead of --data")
    parser.add_argument("--split", default="test", help="split of --task (default: test)")
    parser.add_argument("--data-dir", help="folder holding the shipped tasks' files")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N rows")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", help="base model (default: the one the prompt was trained on)")
    parser.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    parser.add_argument("--length-normalize", action="store_true", help="rank labels by mean, not summed, log-prob")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softprompt",
        description="Prompt tuning for frozen language models: train, evaluate and apply soft prompts.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    evaluate = sub.add_parser("eval", help="held-out metrics as one JSON line", description="Evaluate a prompt.")
    _prompt_args(evaluate)
    evaluate.add_argument(
        "--method",
        choices=("rank", "generate"),
        default="rank",
        help="rank labels by log-likelihood, or generate and match the label word",
    )
    predict = sub.add_parser("predict", help="write predictions to CSV or JSONL", description="Predict labels.")
    _prompt_args(predict)
    predict.add_argument("--output", required=True, help="predictions file (.csv or .jsonl)")
    predict.add_argument("--server", metavar="URL", help="ask a `softprompt serve` server; PROMPT is its task name")
    serve = sub.add_parser(
        "serve",
        help="serve many prompts over HTTP",
        description="Serve prompts over HTTP: one "
        "frozen model, every prompt folder under --prompts, mixed-task batches.",
    )
    serve.add_argument("--model", default="smollm2-135m", help="base model (default: smollm2-135m)")
    serve.add_argument("--prompts", required=True, help="folder of prompt folders; each folder's name is a task")
    serve.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-batch", type=int, default=32, help="rows per model forward")
    serve.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    serve.add_argument("--max-queue", type=int, default=1024, help="waiting requests before 503")
    serve.add_argument(
        "--batching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="merge concurrent requests into one forward",
    )
    serve.add_argument("--max-items", type=int, default=64, help="inputs per request")
    serve.add_argument("--max-input-tokens", type=int, default=512, help="tokens per input")
    serve.add_argument("--max-new-tokens", type=int, default=256, help="largest max_tokens for completions")
    serve.add_argument("--max-body-bytes", type=int, default=2**20, help="largest request body")
    serve.add_argument("--admin-token-file", help="enables PUT/DELETE /v1/tasks/NAME with this bearer token")
    _toolbox_parsers(sub)
    return parser


def _toolbox_parsers(sub) -> None:
    """The paper's toolbox: ensembles, nearest-token inspection, length/init sweeps, zero-shot transfer."""
    ensemble = sub.add_parser(
        "ensemble",
        help="several prompts for one task, in one forward",
        description="Evaluate K prompts of one task together (one batched forward).",
    )
    ensemble.add_argument("prompts", nargs="+", help="two or more prompt folders of the same task")
    ensemble.add_argument("--data", help="labelled file to read (.csv, .tsv, .jsonl, hf:...)")
    ensemble.add_argument("--task", help="read a shipped task's split instead of --data")
    ensemble.add_argument("--split", default="test", help="split of --task (default: test)")
    ensemble.add_argument("--data-dir", help="folder holding the shipped tasks' files")
    ensemble.add_argument("--limit", type=int, default=0, help="use only the first N rows")
    ensemble.add_argument("--batch-size", type=int, default=32, help="rows x members per forward")
    ensemble.add_argument(
        "--mode", choices=("vote", "mean"), default="vote", help="majority vote, or the highest mean probability"
    )
    ensemble.add_argument("--model", help="base model (default: the one the prompts were trained on)")
    ensemble.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    inspect = sub.add_parser(
        "inspect",
        help="nearest vocabulary tokens of each prompt vector",
        description="Show the tokens nearest (cosine) to each prompt position.",
    )
    inspect.add_argument("prompt", help="prompt folder")
    inspect.add_argument("--k", type=int, default=5, help="neighbours per position")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.add_argument("--png", help="also draw a heat map to this PNG")
    inspect.add_argument("--model", help="base model (default: the one the prompt was trained on)")
    sweep = sub.add_parser(
        "sweep",
        help="grid over prompt length, init and seed -> CSV + PNG",
        description="Train one prompt per (length, init, seed), evaluate each on held-out rows, "
        "write OUTPUT/sweep.csv and OUTPUT/sweep.png (score vs length, one line per init).",
    )
    sweep.add_argument("--lengths", default="1,5,20,100", help="comma-separated prompt lengths")
    sweep.add_argument("--inits", default="random-uniform,sampled-vocab,class-label", help="comma-separated inits")
    sweep.add_argument("--seeds", default="0", help="comma-separated seeds")
    sweep.add_argument("--test", help="labelled file for the held-out score (default: --task's --test-split)")
    sweep.add_argument("--test-split", default="test", help="split of --task used for the held-out score")
    sweep.add_argument("--test-limit", type=int, default=0, help="score on the first N held-out rows only")
    sweep.add_argument("--plot", metavar="CSV", help="only redraw the PNG beside an existing sweep.csv")
    _add_train_options(sweep)
    transfer = sub.add_parser(
        "transfer",
        help="train on one task, evaluate zero-shot on another",
        description="Train a prompt on one data set, then evaluate it zero-shot on another "
        "whose columns are mapped onto the training fields (e.g. QQP -> MRPC).",
    )
    transfer.add_argument("--target", required=True, help="labelled file of the target task")
    transfer.add_argument(
        "--target-map",
        required=True,
        help='training field=target column pairs, e.g. "question1=#1 String,question2=#2 String,is_duplicate=Quality"',
    )
    transfer.add_argument("--target-limit", type=int, default=0, help="evaluate on the first N target rows only")
    transfer.add_argument("--overwrite", action="store_true", help="start over in an --output that holds a run")
    _add_train_options(transfer)


def _train(args: argparse.Namespace) -> None:
    from .train import fit, resume_config

    if args.resume:
        fit(resume_config(args.resume), resume=True)
        return
    config = _train_config(args)
    tuned = fit(config, overwrite=args.overwrite)
    print(f"saved prompt to {config.output}", file=sys.stderr)
    if "metrics" in tuned.meta:
        print(json.dumps(tuned.meta["metrics"]))


def _train_config(args: argparse.Namespace):
    """TrainConfig from --config FILE.toml, overridden by the flags given."""
    from .train import TrainConfig

    values: dict = {}
    if args.config:
        try:
            values = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SoftpromptError(f"{args.config}: {exc}") from None
    flags = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name) is not None
    }
    return TrainConfig.from_dict({**values, **flags}, args.config or "flags")


def _rows(args: argparse.Namespace) -> tuple[list[dict], str]:
    from .tasks import load_named, read_rows

    if bool(args.data) == bool(args.task):
        raise SoftpromptError("give exactly one of --data FILE or --task NAME")
    if args.data:
        rows, source = read_rows(args.data), args.data
    else:
        _, rows, source = load_named(args.task, args.split, Path(args.data_dir) if args.data_dir else None)
    rows = rows[: args.limit] if args.limit else rows
    return rows, source


def _load(args: argparse.Namespace):
    from .tuned import TunedPrompt

    return TunedPrompt.from_pretrained(args.prompt, dtype=args.dtype, model=args.model)


def _eval(args: argparse.Namespace) -> None:
    tuned = _load(args)
    rows, source = _rows(args)
    tuned.task.check(rows, source)
    result = tuned.evaluate(rows, args.batch_size, method=args.method, length_normalize=args.length_normalize)
    print(json.dumps({"data": source, **result}))


def _predict(args: argparse.Namespace) -> None:
    from .checkpoint import atomic_write

    rows, source = _rows(args)
    if args.server:
        predictions, labels = _predict_remote(args.server, args.prompt, rows, args.batch_size)
    else:
        tuned = _load(args)
        tuned.task.check(rows, source, labelled=False)
        predictions, labels = tuned.predict(rows, args.batch_size, args.length_normalize), tuned.task.labels
    output = Path(args.output)
    if output.suffix == ".jsonl":
        text = "".join(json.dumps(p) + "\n" for p in predictions)
    elif output.suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["row", "label", *[f"score:{label}" for label in labels]])
        for number, p in enumerate(predictions, 1):
            writer.writerow([number, p["label"], *[f"{p['scores'][label]:.6f}" for label in labels]])
        text = buffer.getvalue()
    else:
        raise SoftpromptError(f"--output {output}: use a .csv or .jsonl file name")
    atomic_write(output, text.encode("utf-8"))
    print(f"wrote {len(predictions)} predictions to {output}", file=sys.stderr)


def _predict_remote(url: str, task: str, rows: list[dict], batch_size: int) -> tuple[list[dict], list[str]]:
    """The same predictions, computed by a `softprompt serve` server (PROMPT is then the task's name)."""
    from .client import Client

    client = Client(url)
    labels = next((t["labels"] for t in client.tasks() if t["name"] == task), None)
    if labels is None:
        raise SoftpromptError(f"{url}: no task {task!r}")
    predictions = []
    for start in range(0, len(rows), batch_size):
        reply = client.classify(task, rows[start : start + batch_size], return_scores=True)
        predictions += [{"label": label, "scores": scores} for label, scores in zip(reply["labels"], reply["scores"])]
    return predictions, labels


def _ensemble(args: argparse.Namespace) -> None:
    from .ensemble import evaluate_ensemble
    from .tuned import TunedPrompt

    first = TunedPrompt.from_pretrained(args.prompts[0], dtype=args.dtype, model=args.model)
    base = (first.lm.base, first.tokenizer)
    members = [first] + [TunedPrompt.from_pretrained(folder, base=base) for folder in args.prompts[1:]]
    rows, source = _rows(args)
    first.task.check(rows, source)
    print(json.dumps({"data": source, **evaluate_ensemble(members, rows, args.batch_size, args.mode)}))


def _numbers(text: str, option: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise SoftpromptError(f"{option}: expected comma-separated integers, got {text!r}") from None


def _sweep(args: argparse.Namespace) -> None:
    from .sweep import plot_sweep, read_csv, run_sweep
    from .tasks import load_named, read_rows

    if args.plot:
        plot_sweep(read_csv(Path(args.plot)), Path(args.plot).with_suffix(".png"))
        return
    config = _train_config(args)
    if args.test:
        test_rows = read_rows(args.test)
    elif config.task:
        test_rows = load_named(config.task, args.test_split, Path(config.data_dir) if config.data_dir else None)[1]
    else:
        raise SoftpromptError("sweep needs --test FILE (or --task with a --test-split)")
    test_rows = test_rows[: args.test_limit] if args.test_limit else test_rows
    lengths, seeds = _numbers(args.lengths, "--lengths"), _numbers(args.seeds, "--seeds")
    inits = [item.strip() for item in args.inits.split(",") if item.strip()]
    results = run_sweep(config, lengths, inits, seeds, test_rows, Path(config.output))
    for row in results:
        print(json.dumps(row))


def _transfer(args: argparse.Namespace) -> None:
    from .tasks import parse_mapping, read_rows, rename_columns
    from .train import fit

    config = _train_config(args)
    mapping = parse_mapping(args.target_map, "target_map")
    target = rename_columns(read_rows(args.target), mapping, args.target)
    target = target[: args.target_limit] if args.target_limit else target
    tuned = fit(config, overwrite=args.overwrite)
    tuned.task.check(target, args.target)
    result = tuned.evaluate(target, config.eval_batch_size)
    print(json.dumps({"source": config.task or config.train, "target": args.target, **result}))


def _inspect(args: argparse.Namespace) -> None:
    from .inspect import as_text, heat_map, nearest_tokens
    from .tuned import TunedPrompt

    if args.k < 1:
        raise SoftpromptError("--k must be at least 1")
    report = nearest_tokens(TunedPrompt.from_pretrained(args.prompt, model=args.model), args.k)
    print(json.dumps(report) if args.json else as_text(report))
    if args.png:
        heat_map(report, Path(args.png))


def _serve(args: argparse.Namespace) -> None:
    from .serve.app import Limits
    from .serve.server import serve

    limits = Limits(
        max_items=args.max_items,
        max_input_tokens=args.max_input_tokens,
        max_new_tokens=args.max_new_tokens,
        max_body_bytes=args.max_body_bytes,
    )
    serve(
        args.host,
        args.port,
        model=args.model,
        prompts=args.prompts,
        dtype=args.dtype,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        batching=args.batching,
        limits=limits,
        admin_token_file=args.admin_token_file,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bar and one-line errors only
    warnings.formatwarning = lambda message, *_: f"softprompt: warning: {message}\n"
    try:
        commands = {
            "train": _train,
            "eval": _eval,
            "predict": _predict,
            "serve": _serve,
            "ensemble": _ensemble,
            "inspect": _inspect,
            "sweep": _sweep,
            "transfer": _transfer,
        }
        commands[args.command](args)
    except ParameterError as exc:  # the library names the parameter, the command line its flag
        print(f"softprompt: error: {exc.spelled(lambda name: '--' + name.replace('_', '-'))}", file=sys.stderr)
        return 2
    except SoftpromptError as exc:
        print(f"softprompt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("softprompt: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
