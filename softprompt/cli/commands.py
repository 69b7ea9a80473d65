"""One function per command: read the arguments, call the library, print the result."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
from pathlib import Path

from ..utils.errors import SoftpromptError


def train(args: argparse.Namespace) -> None:
    from ..training.train import fit, resume_config

    if args.resume:
        fit(resume_config(args.resume), resume=True)
        return
    config = train_config(args)
    tuned = fit(config, overwrite=args.overwrite)
    print(f"saved prompt to {config.output}", file=sys.stderr)
    if tuned.record.metrics is not None:
        print(json.dumps(tuned.record.metrics))


def design(args: argparse.Namespace) -> None:
    from ..toolbox.prompt_design import run_design

    config = train_config(args)
    tuned = run_design(config, overwrite=args.overwrite)
    print(f"saved prompt design ({tuned.record.shots} examples) to {config.output}", file=sys.stderr)
    if tuned.record.metrics is not None:
        print(json.dumps(tuned.record.metrics))


def train_config(args: argparse.Namespace):
    """TrainConfig from --config FILE.toml, overridden by the flags given."""
    from ..training.train_config import TrainConfig

    values: dict = {}
    if args.config:
        try:
            values = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SoftpromptError(f"{args.config}: {exc}") from None
    given = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainConfig)}  # design takes a few
    flags = {name: value for name, value in given.items() if value is not None}
    return TrainConfig.from_dict({**values, **flags}, args.config or "flags")


def _rows(args: argparse.Namespace) -> tuple[list[dict], str]:
    from ..data.tasks import load_named, read_rows

    if bool(args.data) == bool(args.task):
        raise SoftpromptError("give exactly one of --data FILE or --task NAME")
    if args.data:
        rows, source = read_rows(args.data), args.data
    else:
        _, rows, source = load_named(args.task, args.split, Path(args.data_dir) if args.data_dir else None)
    rows = rows[: args.limit] if args.limit else rows
    return rows, source


def _load(args: argparse.Namespace, folder: str):
    from ..prompts.tuned import TunedPrompt

    return TunedPrompt.from_pretrained(folder, dtype=args.dtype, model=args.model, device=args.device)


def evaluate(args: argparse.Namespace) -> None:
    from ..prompts.model_card import record_evaluation, record_name
    from ..toolbox.results_table import format_table

    rows, source = _rows(args)
    results = []
    for folder, tuned in _load_each(args):
        tuned.task.check(rows, source)
        result = tuned.evaluate(rows, args.batch_size, method=args.method, length_normalize=args.length_normalize,
                                by_label=True, progress=args.progress, **_sampling(args))  # fmt: skip
        results.append({"prompt": folder, "method": tuned.record.method.name, **result})
        print(json.dumps({"data": source, **results[-1]}), flush=True)
        if args.png and "confusion_matrix" in result:
            _confusion_png(Path(args.png), folder, result["confusion_matrix"], len(args.prompts) > 1)
        if args.record:
            figures = {k: v for k, v in result.items() if k != "examples_per_s"}
            name = record_name(args.data, args.task if args.task != tuned.task.name else None, args.split, args.limit)
            record_evaluation(folder, name, figures)
    if len(results) > 1 and "accuracy" in results[-1]:
        scored = results[-1]  # every prompt scored the same rows, so one majority class
        majority = {"prompt": "majority class", "accuracy": scored["majority_accuracy"],
                    "macro_f1": scored["majority_macro_f1"]}  # fmt: skip
        print(format_table([*results, majority], ("prompt", "method", "accuracy", "macro_f1")), file=sys.stderr)
    elif len(results) > 1:
        print(format_table(results, ("prompt", "method", "exact_match", "f1", "rougeL", "bleu")), file=sys.stderr)


def _sampling(args: argparse.Namespace) -> dict:
    """How a text-to-text task decodes: greedy, or sampled at --temperature from the --top-p nucleus with --seed."""
    return {"temperature": args.temperature, "top_p": args.top_p, "seed": args.seed}


def _confusion_png(target: Path, folder: str, confusion: dict, several: bool) -> None:
    from ..prompts.plots import plot_confusion

    if several:
        target = target.with_name(f"{target.stem}-{Path(folder).name}{target.suffix}")
    target.parent.mkdir(parents=True, exist_ok=True)
    plot_confusion(confusion, target, f"{Path(folder).name}: confusion on {sum(map(sum, confusion['counts']))} rows")


def _load_each(args: argparse.Namespace):
    """(folder, TunedPrompt) for each of `eval`'s folders, in order; prompts of one base model share it loaded."""
    from ..prompts.record import FolderRecord
    from ..prompts.tuned import TunedPrompt

    bases: dict[str, tuple] = {}
    for folder in args.prompts:
        record = FolderRecord.read(folder)
        ref = None if record.method.trains_model else args.model or record.base_model
        tuned = TunedPrompt.from_pretrained(folder, base=bases.get(ref), dtype=args.dtype, model=args.model,
                                            device=args.device)  # fmt: skip
        if ref:
            bases.setdefault(ref, tuned.base)
        yield folder, tuned


def predict(args: argparse.Namespace) -> None:
    from ..prompts.predictions import write_predictions

    rows, source = _rows(args)
    if args.server:
        from .remote import predict_remote

        predictions, labels = predict_remote(args.server, args.prompt, rows, source, args.batch_size,
                                             args.api_key_file, _sampling(args))  # fmt: skip
    else:
        tuned = _load(args, args.prompt)
        tuned.task.check(rows, source, labelled=False)
        predictions = tuned.predict(rows, args.batch_size, args.length_normalize, progress=args.progress,
                                    **_sampling(args))  # fmt: skip
        labels = tuned.task.labels
    write_predictions(args.output, predictions, labels)
    print(f"wrote {len(predictions)} predictions to {args.output}", file=sys.stderr)


def ensemble(args: argparse.Namespace) -> None:
    from ..prompts.tuned import TunedPrompt
    from ..toolbox.ensemble import evaluate_ensemble

    first = _load(args, args.prompts[0])
    if first.task.generates:
        raise SoftpromptError(f"{args.prompts[0]}: ensembles vote on labels; a text-to-text task has none")
    members = [first] + [TunedPrompt.from_pretrained(folder, base=first.base) for folder in args.prompts[1:]]
    rows, source = _rows(args)
    first.task.check(rows, source)
    result = evaluate_ensemble(members, rows, args.batch_size, args.mode, progress=args.progress)
    print(json.dumps({"data": source, **result}))


def inspect(args: argparse.Namespace) -> None:
    from ..prompts.tuned import TunedPrompt
    from ..toolbox.inspect import as_text, heat_map, nearest_tokens

    if args.k < 1:
        raise SoftpromptError("--k must be at least 1")
    report = nearest_tokens(TunedPrompt.from_pretrained(args.prompt, model=args.model, device=args.device), args.k)
    print(json.dumps(report) if args.json else as_text(report))
    if args.png:
        heat_map(report, Path(args.png))


def harness(args: argparse.Namespace) -> None:
    """The prompt's task over the rows eval would read, as an lm-evaluation-harness task; prints how to run it."""
    import torch

    from ..models.base import resolve
    from ..toolbox.harness import write_harness_task

    rows, _ = _rows(args)
    tuned = _load(args, args.prompt)
    tuned.task.check(rows, args.data or args.task)
    name = args.name or "softprompt_" + Path(args.prompt).resolve().name.replace("-", "_")
    folder = Path(args.output)
    write_harness_task(tuned.encoder, rows, folder, name)
    if not (tuned.task.generates or tuned.task.chat) and tuned.task.template != tuned.task.template.rstrip():
        print("softprompt: note: the template ends in whitespace, which the harness moves into each choice and "
              "tokenises with it: its scores will not be softprompt eval's (docs/evaluation.md)", file=sys.stderr)
    base = resolve(tuned.lm.model.name_or_path)  # a folder the harness's tokenizer and hf model read
    served = "--model local-completions --model_args model=TASK,base_url=URL/v1/completions,tokenizer=" + base
    print(f"wrote {folder / name}.yaml and .jsonl ({len(rows)} rows); run it with", file=sys.stderr)
    print(f"lm_eval {served} --include_path {folder} --tasks {name}")
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the harness's default is cuda
    print(f"lm_eval --model hf --model_args pretrained={base},peft={Path(args.prompt).resolve()},dtype=float32 "
          f"--device {device} --include_path {folder} --tasks {name}")  # fmt: skip


def serve(args: argparse.Namespace) -> None:
    from ..serve.config import ServeConfig

    config = ServeConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(ServeConfig)})
    config.validate()
    if config.engine == "ray":  # imported only here: Ray is an optional extra, slow to import
        from ..serve.ray_engine import serve_ray

        serve_ray(config)
    else:
        from ..serve.server import serve

        serve(config)


COMMANDS = {
    "train": train,
    "design": design,
    "eval": evaluate,
    "predict": predict,
    "serve": serve,
    "ensemble": ensemble,
    "inspect": inspect,
    "harness": harness,
}
