"""experiments/transfer_table.py: the kept records that let the Table-1 grid grow across sessions, the learning
rate chosen on dev alone, and the sets left to score."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from softprompt.prompts.method import MODEL_TUNING, PROMPT_TUNING
from softprompt.prompts.record import FolderRecord

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "transfer_table.py"
spec = importlib.util.spec_from_file_location("transfer_table", SCRIPT)
table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table)


def _run(folder: Path, method=PROMPT_TUNING, dev_f1: float = 0.5, evaluations: dict | None = None) -> Path:
    record = FolderRecord(method=method, metrics={"f1": dev_f1}, step=50, train_seconds=12.0,
                          train_config={"lr": 0.03, "max_steps": 150, "train_limit": 1000},
                          evaluations=evaluations or {})  # fmt: skip
    folder.mkdir(parents=True)
    record.write(folder)
    return folder


def test_keep_copies_a_run_and_merges_a_retrained_runs_scores_into_the_first_record(tmp_path):
    squad = table.scored_name("squad", "dev", 500)
    reddit = table.scored_name("squadshifts/reddit", "test", 500)
    kept = tmp_path / "records" / "smollm2-135m" / "prompt-tuning" / "lr-3e-2"
    table.keep(_run(tmp_path / "a", dev_f1=0.4, evaluations={squad: {"f1": 0.3}}), kept)
    assert FolderRecord.read(kept).evaluations == {squad: {"f1": 0.3}}
    # The same cell trained again in a later checkout (its dev F1 a little off) and scored on another set.
    table.keep(_run(tmp_path / "b", dev_f1=0.41, evaluations={reddit: {"f1": 0.2}}), kept)
    merged = FolderRecord.read(kept)
    assert merged.metrics == {"f1": 0.4}  # the first training's record stands
    assert merged.evaluations == {squad: {"f1": 0.3}, reddit: {"f1": 0.2}}
    assert table.unscored("squad", "dev", 500, [str(kept)]) == []
    assert table.unscored("squadshifts/amazon", "test", 500, [str(kept)]) == [str(kept)]


def test_keep_holds_a_prompts_files_but_not_a_model_tuned_runs_weights(tmp_path):
    prompt = _run(tmp_path / "pt")
    model = _run(tmp_path / "mt", method=MODEL_TUNING)
    for folder in (prompt, model):
        for name in table.PROMPT_FILES:
            (folder / name).write_bytes(b"weights of " + folder.name.encode())
    table.keep(prompt, tmp_path / "kept-pt")
    table.keep(model, tmp_path / "kept-mt")
    assert [(tmp_path / "kept-pt" / n).read_bytes() for n in table.PROMPT_FILES] == [b"weights of pt"] * 2
    assert sorted(p.name for p in (tmp_path / "kept-mt").iterdir()) == ["softprompt.json"]


def test_each_method_is_scored_at_its_best_dev_f1_and_unfinished_runs_do_not_count(tmp_path):
    rung = tmp_path / "smollm2-135m"
    for lr, f1 in (("1e-2", 0.30), ("3e-2", 0.45), ("1e-1", 0.20)):
        _run(rung / "prompt-tuning" / f"lr-{lr}", dev_f1=f1)
    _run(rung / "model-tuning" / "lr-1e-5", MODEL_TUNING, dev_f1=0.5)
    (rung / "model-tuning" / "lr-1e-4").mkdir()  # cut short: no record
    picked = table.chosen(rung)
    assert picked == {"prompt-tuning": rung / "prompt-tuning" / "lr-3e-2",
                      "model-tuning": rung / "model-tuning" / "lr-1e-5"}  # fmt: skip


def test_the_page_of_a_grid_cut_short_says_what_is_missing(tmp_path):
    squad = table.scored_name("squad", "dev", 500)
    _run(tmp_path / "smollm2-135m" / "prompt-tuning" / "lr-3e-2", evaluations={squad: {"exact_match": 0.3, "f1": 0.35}})
    page = table.page(tmp_path, 500)
    assert "**Status: not finished.**" in page
    assert "prompt tuning 1 of 3 learning rates, model tuning 0 of 3, prompt design not built; 1 of 15" in page
    assert "| SQuAD (dev) | Wiki | 30.0 / 35.0 |" in page
