"""Bad text-to-text input through the CLI (in-process, `softprompt.cli.main`): exit 2 and one line on stderr naming
the file, row and field or the flags, no traceback, and no output folder left behind (an existing one intact)."""

from __future__ import annotations

from pathlib import Path

import pytest

from softprompt.cli import main
from softprompt.data.tasks import Task
from softprompt.models.base import Base, load_base
from softprompt.models.prompt import init_prompt
from softprompt.prompts.tuned import TunedPrompt

from .texts import MAX_NEW_TOKENS, TEMPLATE, qa_rows, write_jsonl

TEXT_FLAGS = ["--template", TEMPLATE, "--target-field", "answer", "--references-field", "answers"]


def _train(model_dir: Path, train: Path, output: Path, *flags: str) -> list[str]:
    return ["train", "--model", str(model_dir), "--train", str(train), "--max-new-tokens", str(MAX_NEW_TOKENS),
            "--max-steps", "1", "--dtype", "float32", "--no-progress", "--output", str(output), *flags]  # fmt: skip


def _refused(argv: list[str], capsys) -> str:
    """The one line a refused command prints; it exits 2, with nothing on stdout."""
    code = main(argv)
    said = capsys.readouterr()
    lines = said.err.strip().splitlines()
    assert code == 2, said.err
    assert len(lines) == 1 and lines[0].startswith("softprompt: error: "), said.err
    assert said.out == ""
    return lines[0]


def _rows_with(row_2: dict) -> list[dict]:
    """Four good rows, the second changed by `row_2` (a None value removes the field)."""
    rows = qa_rows(4)
    rows[1].update(row_2)
    rows[1] = {key: value for key, value in rows[1].items() if value is not None}
    return rows


# row 2 as the case sets it: what the message names beside the file and "row 2"
BAD_ROWS = {
    "no-target-field": ({"answer": None}, "no target field answer"),
    "empty-target": ({"answer": "  "}, "empty target (answer)"),
    "references-not-json": ({"answers": "abc"}, "answers is not a JSON list of strings (got 'abc')"),
    "references-not-strings": ({"answers": [1, 2]}, "answers is not a JSON list of strings (got '[1, 2]')"),
    "references-empty": ({"answers": []}, "answers is not a JSON list of strings (got '[]')"),
    "no-references-field": ({"answers": None}, "no references field answers"),
}


@pytest.mark.parametrize("name", BAD_ROWS)
def test_a_bad_text_row_is_one_line_naming_file_row_and_field(name, llama_dir, tmp_path, capsys):
    change, needle = BAD_ROWS[name]
    train = write_jsonl(tmp_path / "qa.jsonl", _rows_with(change))
    line = _refused(_train(llama_dir, train, tmp_path / "run", *TEXT_FLAGS), capsys)
    assert line == f"softprompt: error: {train} row 2: {needle}"
    assert not (tmp_path / "run").exists()


def test_a_bad_eval_file_leaves_an_overwritten_run_whole(llama_dir, tmp_path, capsys):
    """--overwrite of a folder that holds a run, with an --eval file whose row 2 has no target: the old run stays."""
    output = tmp_path / "run"
    (output / "checkpoints" / "step-00000003").mkdir(parents=True)
    (output / "checkpoints" / "step-00000003" / "state.json").write_text("{}")
    (output / "metrics.jsonl").write_text('{"step": 3}\n')
    before = sorted(p.relative_to(output) for p in output.rglob("*"))
    train = write_jsonl(tmp_path / "qa.jsonl", qa_rows(4))
    dev = write_jsonl(tmp_path / "dev.jsonl", _rows_with({"answer": None}))
    line = _refused(_train(llama_dir, train, output, *TEXT_FLAGS, "--eval", str(dev), "--overwrite"), capsys)
    assert line == f"softprompt: error: {dev} row 2: no target field answer"
    assert sorted(p.relative_to(output) for p in output.rglob("*") if p.name != ".lock") == before
    assert (output / "metrics.jsonl").read_text() == '{"step": 3}\n'


def test_a_free_text_label_field_is_refused_with_a_hint_at_target_field(llama_dir, tmp_path, capsys):
    train = write_jsonl(tmp_path / "qa.jsonl", [{**row, "answer": f"answer {i}"} for i, row in enumerate(qa_rows(20))])
    flags = ["--template", TEMPLATE, "--label-field", "answer"]
    line = _refused(_train(llama_dir, train, tmp_path / "run", *flags), capsys)
    assert line == (f"softprompt: error: {train}: every one of its 20 rows has its own answer, so it is no label to "
                    "rank; for free-text targets give --target-field answer")  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_target_field_and_target_template_together_are_refused(llama_dir, tmp_path, capsys):
    train = write_jsonl(tmp_path / "qa.jsonl", qa_rows(4))
    flags = ["--template", TEMPLATE, "--target-field", "answer", "--target-template", "{answer}"]
    line = _refused(_train(llama_dir, train, tmp_path / "run", *flags), capsys)
    assert line == "softprompt: error: --target-field: give one of --target-field or --target-template, not both"
    assert not (tmp_path / "run").exists()


def test_target_field_and_label_field_together_are_refused(llama_dir, tmp_path, capsys):
    rows = [{**row, "kind": "question"} for row in qa_rows(4)]
    train = write_jsonl(tmp_path / "qa.jsonl", rows)
    flags = ["--template", TEMPLATE, "--target-field", "answer", "--label-field", "kind"]
    line = _refused(_train(llama_dir, train, tmp_path / "run", *flags), capsys)
    assert "--target-field" in line and "--label-field" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "task, metric, allowed",
    [("text", "accuracy", "loss, exact_match, f1, rougeL, bleu"), ("classification", "f1", "loss, accuracy, macro_f1")],
)
def test_keep_best_of_the_other_kind_of_task_is_refused_by_its_flag(task, metric, allowed, llama_dir, tmp_path,
                                                                      capsys):  # fmt: skip
    rows = [{**row, "kind": "even" if i % 2 else "odd"} for i, row in enumerate(qa_rows(8))]
    train = write_jsonl(tmp_path / "qa.jsonl", rows)
    kind = TEXT_FLAGS if task == "text" else ["--template", TEMPLATE, "--label-field", "kind"]
    code = main(_train(llama_dir, train, tmp_path / "run", *kind, "--dev-fraction", "0.25", "--keep-best", metric))
    said = capsys.readouterr()
    errors = [line for line in said.err.splitlines() if line.startswith("softprompt: error:")]
    assert code == 2 and "Traceback" not in said.err
    a = "a text-to-text" if task == "text" else "a classification"
    assert errors == [f"softprompt: error: --keep-best: {metric} is not reported for {a} task (choose from {allowed})"]
    assert said.err.strip().splitlines()[-1] == errors[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("references", ["abc", [1, 2]])
def test_predict_on_a_row_with_bad_references_is_one_line(references, llama_dir, tmp_path, capsys):
    model, tokenizer = base = load_base(str(llama_dir), "float32")
    task = Task(TEMPLATE, target_field="answer", references_field="answers", max_new_tokens=MAX_NEW_TOKENS)
    prompt = init_prompt(4, model.get_input_embeddings(), tokenizer, "sampled-vocab", seed=0)
    TunedPrompt.build(Base(*base), prompt, task).save_pretrained(tmp_path / "prompt")
    data = write_jsonl(tmp_path / "rows.jsonl", _rows_with({"answers": references}))
    output = tmp_path / "predictions.jsonl"
    line = _refused(["predict", str(tmp_path / "prompt"), "--data", str(data), "--output", str(output), "--dtype",
                     "float32", "--no-progress"], capsys)  # fmt: skip
    assert line.startswith(f"softprompt: error: {data} row 2: answers is not a JSON list of strings")
    assert not output.exists()
