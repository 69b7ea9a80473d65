"""The CLI in-process: the train options come from TrainConfig's fields, library errors are spelled with flags,
prediction files are written by the library. No model loads here."""

from __future__ import annotations

import csv
import dataclasses
import json
import warnings

import pytest

from softprompt.cli import build_parser, main
from softprompt.prompts.predictions import write_predictions
from softprompt.training.train_config import TrainConfig
from softprompt.utils.errors import ParameterError

PREDICTIONS = [
    {"label": "complaint", "scores": {"complaint": -0.25, "no complaint": -1.5}},
    {"label": "no complaint", "scores": {"complaint": -2.0, "no complaint": -0.125}},
]


def _help(*command: str) -> str:
    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.dest == "command")
    return "".join(subparsers.choices[command[0]].format_help().split())  # wrapped lines may break at a dash


@pytest.mark.parametrize("command", ["train", "sweep", "transfer"])
def test_every_config_field_is_a_flag_with_its_help_and_default(command):
    text = _help(command)
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        help = "".join(field.metadata["help"].split())
        if field.type == "bool":
            assert f"{flag},--no-{flag[2:]}{help}" in text, flag
        else:
            assert f"{flag}{field.name.upper()}{help}(default:{field.default})" in text, flag


def test_every_serve_option_is_a_flag_with_the_configs_default():
    """`serve`'s flags are ServeConfig's fields: unset, they parse to the config's own defaults."""
    from softprompt.serve.config import ServeConfig

    text = _help("serve")
    for field in dataclasses.fields(ServeConfig):
        assert "--" + field.name.replace("_", "-") in text and "".join(field.metadata["help"].split()) in text
    args = build_parser().parse_args(["serve", "--prompts", "p", "--no-batching", "--request-timeout", "5"])
    parsed = ServeConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(ServeConfig)})
    assert parsed == ServeConfig(prompts="p", batching=False, request_timeout=5.0)


def test_a_bad_serve_option_is_one_line_with_its_flag(capsys):
    assert main(["serve", "--prompts", "p", "--engine", "kubernetes"]) == 2
    assert capsys.readouterr().err == ("softprompt: error: --engine: must be one of single, ray, got 'kubernetes'\n")


def test_flags_parse_to_the_fields_types():
    args = build_parser().parse_args(["train", "--task", "t", "--lr", "0.5", "--epochs", "3", "--no-progress"])
    assert (args.lr, args.epochs, args.progress, args.task, args.seed) == (0.5, 3, False, "t", None)


def test_ensemble_takes_the_prompt_options_for_several_prompts():
    args = build_parser().parse_args(["ensemble", "a", "b", "--task", "t", "--limit", "5", "--dtype", "float32"])
    assert (args.prompts, args.task, args.limit, args.dtype, args.mode, args.batch_size) == (
        ["a", "b"], "t", 5, "float32", "vote", 32
    )  # fmt: skip
    assert "--length-normalize" in _help("eval") and "--length-normalize" not in _help("ensemble")


def test_a_parameter_error_is_printed_with_its_flags(tmp_path, capsys, monkeypatch):
    """`output` is refused before the model (which does not exist) loads, and printed as `--output`."""
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() sets its own
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 1}\n')
    code = main(["train", "--train", str(tmp_path / "rows.csv"), "--template", "{text}", "--label-field", "label",
                 "--model", str(tmp_path / "no-model"), "--output", str(tmp_path / "run")])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err == (
        f"softprompt: error: --output: {tmp_path / 'run'} already holds a training run; pass --resume to continue "
        "it, --overwrite to start over, or another --output\n"
    )


def test_parameter_error_spells_other_parameters_and_keeps_values_verbatim():
    error = ParameterError("train", "needs {template} and {label_field} (got {value!r})", value="{text}")
    assert str(error) == "train: needs template and label_field (got '{text}')"
    assert error.spelled(lambda name: "--" + name.replace("_", "-")) == (
        "--train: needs --template and --label-field (got '{text}')"
    )


def test_predictions_are_written_as_csv_or_jsonl(tmp_path):
    write_predictions(tmp_path / "p.jsonl", PREDICTIONS, ["complaint", "no complaint"])
    assert [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()] == PREDICTIONS
    write_predictions(tmp_path / "p.csv", PREDICTIONS, ["complaint", "no complaint"])
    assert list(csv.reader(open(tmp_path / "p.csv", newline=""))) == [
        ["row", "label", "score:complaint", "score:no complaint"],
        ["1", "complaint", "-0.250000", "-1.500000"],
        ["2", "no complaint", "-2.000000", "-0.125000"],
    ]
    with pytest.raises(ParameterError, match=r"^output: .*p\.txt: use a \.csv or \.jsonl file name") as failed:
        write_predictions(tmp_path / "p.txt", PREDICTIONS, ["complaint", "no complaint"])
    assert failed.value.param == "output" and not (tmp_path / "p.txt").exists()


@pytest.mark.parametrize("name", ["seed_recipe", "demo"])
def test_named_configs_are_valid_train_configs(name):
    """configs/*.toml, what `make demo` and bench/seed_recipe.py read, parse as flags do and pass validation."""
    import tomllib
    from pathlib import Path

    source = Path(__file__).resolve().parents[1] / "configs" / f"{name}.toml"
    config = TrainConfig.from_dict(tomllib.loads(source.read_text()), str(source))
    config.validate()
    assert config.task == "raft/twitter_complaints" and config.dev_fraction == 0.2
    assert config.model == {"seed_recipe": "smollm2-135m", "demo": "qwen2.5-0.5b"}[name]


def test_design_offers_only_what_prompt_design_uses(capsys):
    text = _help("design")
    assert "--shots" in text and "--seed" in text and "--no-progress" in text
    assert "--lr" not in text and "--epochs" not in text and "--num-virtual-tokens" not in text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["design", "--task", "raft/twitter_complaints", "--lr", "1"])
    assert "unrecognized arguments: --lr 1" in capsys.readouterr().err
