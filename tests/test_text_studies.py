"""The paper's studies on a text-to-text task (SQuAD): `compare` tables exact match and F1 for the three
methods, and `transfer` trains once and scores each shipped out-of-domain set; on a tiny random Llama."""

from __future__ import annotations

import json
import subprocess
import sys

from softprompt.data.tasks import load_named
from softprompt.toolbox.compare import METHODS, columns, run_compare, summarize, summary_columns
from softprompt.toolbox.results_table import read_csv
from softprompt.training.train import TrainConfig


def test_compare_on_squad_tables_exact_match_and_f1_for_the_three_methods(tiny_dir, data_dir, tmp_path):
    output = tmp_path / "cmp"
    config = TrainConfig(model=str(tiny_dir), task="squad", data_dir=str(data_dir), train_limit=24,
                         dev_fraction=0.25, max_steps=1, batch_size=4, max_length=128, max_new_tokens=4,
                         num_virtual_tokens=2, dtype="float32", output=str(output), shots=1,
                         progress=False)  # fmt: skip
    test_rows = load_named("squad", "dev", data_dir)[1][:6]
    results = run_compare(config, [str(tiny_dir)], METHODS, [0], test_rows, output)
    table = read_csv(output / "compare.csv", ("parameters", "seed", "test_n"))
    assert list(table[0]) == list(columns("text")) and "majority_accuracy" not in table[0]
    assert [r["method"] for r in table] == list(METHODS) and table == results
    assert all(r["test_n"] == 6 and 0 <= r["test_exact_match"] <= r["test_f1"] <= 1 for r in table)
    assert all(r["dev_f1"] != "" for r in table)  # every method scored on the 6 dev rows carved from training
    summary = summarize(table)
    assert [row["method"] for row in summary] == list(METHODS)  # no majority-class row: there are no classes
    assert set(summary_columns(table)) >= {"test_exact_match", "test_f1", "dev_f1"}
    assert (output / "compare.png").stat().st_size > 5000


def test_transfer_trains_on_squad_and_scores_each_shipped_target(tiny_dir, data_dir, tmp_path):
    targets = "squad:dev,squadshifts/reddit,mrqa/relation_extraction"
    done = subprocess.run([sys.executable, "-m", "softprompt", "transfer", "--model", str(tiny_dir), "--task", "squad",
                           "--data-dir", str(data_dir), "--train-limit", "8", "--max-steps", "1", "--batch-size", "4",
                           "--max-length", "128", "--max-new-tokens", "4", "--num-virtual-tokens", "2", "--dtype",
                           "float32", "--no-progress", "--output", str(tmp_path / "run"), "--target-tasks", targets,
                           "--target-limit", "3"], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]  # after the log
    expected = ["squad:dev", "squadshifts/reddit:test", "mrqa/relation_extraction:test"]
    assert [line["target"] for line in lines] == expected
    assert all(line["n"] == 3 and 0 <= line["exact_match"] <= line["f1"] <= 1 for line in lines)


def test_transfer_refuses_a_target_it_cannot_read_before_training(tiny_dir, data_dir, tmp_path):
    done = subprocess.run([sys.executable, "-m", "softprompt", "transfer", "--model", str(tiny_dir), "--task", "squad",
                           "--data-dir", str(data_dir), "--max-steps", "1", "--output", str(tmp_path / "run"),
                           "--target-tasks", "squad:nosuch"], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "task squad has no split 'nosuch'" in done.stderr and not (tmp_path / "run").exists()
