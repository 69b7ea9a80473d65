"""The confusion matrix and per-label metrics that `eval` reports: counts that add up to the labels and to the
accuracy, on random predictions and on the real default model through the command line (with its heat map)."""

from __future__ import annotations

import json
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from softprompt.data.tasks import load_named
from softprompt.models.base import Base
from softprompt.models.prompt import init_prompt
from softprompt.prompts.evaluate import classification_metrics, confusion_matrix, label_metrics
from softprompt.prompts.record import FolderRecord
from softprompt.prompts.tuned import TunedPrompt


@given(st.integers(2, 5).flatmap(lambda n: st.tuples(st.just(n), st.lists(st.tuples(st.integers(0, n - 1),
       st.integers(-1, n - 1)), min_size=1, max_size=60))))  # fmt: skip
def test_matrix_adds_up_to_labels_and_accuracy(case):
    n, pairs = case
    gold, predicted = [g for g, _ in pairs], [p for _, p in pairs]
    matrix = confusion_matrix(predicted, gold, n)
    assert [sum(row) for row in matrix] == [gold.count(label) for label in range(n)]
    assert len(matrix[0]) == n + (-1 in predicted)
    metrics = classification_metrics(predicted, gold, n)
    assert sum(matrix[i][i] for i in range(n)) / len(gold) == metrics["accuracy"]
    per_label = label_metrics(matrix, [str(i) for i in range(n)])
    assert [m["support"] for m in per_label.values()] == [gold.count(label) for label in range(n)]
    scored = [m["f1"] for i, m in enumerate(per_label.values()) if gold.count(i) or predicted.count(i)]
    assert abs(sum(scored) / len(scored) - metrics["macro_f1"]) < 1e-12


def test_eval_reports_the_matrix_and_draws_it_real_model(smollm2, data_dir, tmp_path):
    model, tokenizer = smollm2
    task, _, _ = load_named("raft/twitter_complaints", "train", data_dir)
    prompt = init_prompt(8, model.get_input_embeddings(), tokenizer, "text", init_text=task.init_text)
    tuned = TunedPrompt.build(Base(model, tokenizer), prompt, task, record=FolderRecord(init="text"))
    tuned.save_pretrained(tmp_path / "tweets")
    done = subprocess.run(
        [sys.executable, "-m", "softprompt", "eval", str(tmp_path / "tweets"), "--task", "raft/twitter_complaints",
         "--data-dir", str(data_dir), "--split", "test", "--limit", "40", "--dtype", "float32",
         "--png", str(tmp_path / "figures" / "confusion.png")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    _, test_rows, _ = load_named("raft/twitter_complaints", "test", data_dir)
    gold = [task.label_index(row) for row in test_rows[:40]]
    confusion = result["confusion_matrix"]
    assert confusion["labels"] == confusion["columns"] == task.labels
    assert [sum(row) for row in confusion["counts"]] == [gold.count(i) for i in range(len(task.labels))]
    assert sum(confusion["counts"][i][i] for i in range(len(task.labels))) / 40 == result["accuracy"]
    assert {label: m["support"] for label, m in result["per_label"].items()} == {
        label: gold.count(i) for i, label in enumerate(task.labels)
    }
    assert (tmp_path / "figures" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
