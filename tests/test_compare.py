"""`compare`: the three methods on the real default model, one seed, a step each: the CSV, the PNG, going on
where it stopped, and `--plot` redrawing from the CSV."""

from __future__ import annotations

import subprocess
import sys

import pytest

from softprompt.data.tasks import load_named
from softprompt.models.base import load_base
from softprompt.toolbox import compare
from softprompt.toolbox.compare import METHODS, columns, parameter_count, run_compare
from softprompt.toolbox.results_table import read_csv
from softprompt.training.train import TrainConfig


def test_compare_three_methods_on_the_default_model(data_dir, tmp_path, monkeypatch):
    output = tmp_path / "cmp"
    config = TrainConfig(model="smollm2-135m", task="raft/twitter_complaints", data_dir=str(data_dir),
                         dev_fraction=0.2, max_steps=1, batch_size=4, dtype="float32", output=str(output),
                         shots=2, progress=False)  # fmt: skip
    _, test_rows, _ = load_named("raft/twitter_complaints", "test", data_dir)
    results = run_compare(config, ["smollm2-135m"], METHODS, [0], test_rows[:16], output)
    table = read_csv(output / "compare.csv", compare.INTEGERS)
    assert [r["method"] for r in table] == list(METHODS) and table == results
    assert list(table[0]) == list(columns("classification"))
    assert {r["parameters"] for r in table} == {134_515_008}  # SmolLM2-135M, its embeddings tied
    assert all(r["test_n"] == 16 and 0 <= r["test_macro_f1"] <= 1 and r["dev_accuracy"] != "" for r in table)
    assert len({r["majority_accuracy"] for r in table}) == 1  # the same held-out rows for every method
    assert (output / "compare.png").stat().st_size > 5000
    model_tuned = output / "runs" / "smollm2-135m" / "model-tuning" / "seed-0"
    assert (model_tuned / "model.safetensors").is_file()
    assert not (model_tuned / "checkpoints").exists()  # a recorded run keeps its model, not its training state

    # A rerun goes on where the table stopped: nothing left to run
    monkeypatch.setattr(compare, "_run", lambda *a: pytest.fail("a finished run ran again"))
    assert run_compare(config, ["smollm2-135m"], METHODS, [0], test_rows[:16], output) == table

    (output / "compare.png").unlink()
    done = subprocess.run([sys.executable, "-m", "softprompt", "compare", "--plot", str(output / "compare.csv"),
                           "--markdown"], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (output / "compare.png").stat().st_size > 5000
    header, rule, *lines = done.stdout.splitlines()  # the summary, as a Markdown table for a report
    assert header.startswith("| model | parameters | method |") and set(rule) <= set("|- ")
    assert [line.split(" | ")[2] for line in lines] == [*(r["method"] for r in table), ""]  # one seed each


@pytest.mark.portable  # prepacked only where oneDNN runs bfloat16
def test_parameter_count_sees_through_prepacked_weights(tiny_dir):
    """bfloat16 on a CPU that runs it natively prepacks the linear weights out of `parameters()`."""
    plain = parameter_count(load_base(str(tiny_dir), "float32")[0], str(tiny_dir))
    assert parameter_count(load_base(str(tiny_dir), "bfloat16")[0], str(tiny_dir)) == plain
    assert plain == sum(p.numel() for p in load_base(str(tiny_dir), "float32")[0].parameters())


def test_summary_is_the_mean_and_range_over_seeds_then_the_majority_class():
    def run(model, method, seed, accuracy, f1):
        return {"model": model, "parameters": len(model), "method": method, "seed": seed, "test_accuracy": accuracy,
                "test_macro_f1": f1, "dev_macro_f1": f1 + 0.1, "majority_accuracy": 0.6,
                "majority_macro_f1": 0.375}  # fmt: skip

    results = [run("a", "prompt-tuning", 0, 0.7, 0.6), run("a", "prompt-design", 0, 0.5, 0.4),
               run("a", "prompt-tuning", 1, 0.8, 0.7), run("b", "prompt-tuning", 0, 0.9, 0.9)]  # fmt: skip
    summary = compare.summarize(results)
    assert [(r["model"], r.get("method")) for r in summary] == [
        ("a", "prompt-tuning"), ("a", "prompt-design"), ("b", "prompt-tuning"), ("majority class", None)
    ]  # fmt: skip
    assert summary[0]["seeds"] == 2 and summary[0]["test_accuracy"] == pytest.approx(0.75)
    assert summary[0]["test_macro_f1"] == pytest.approx(0.65) and summary[0]["f1_range"] == "0.600-0.700"
    assert summary[0]["dev_macro_f1"] == pytest.approx(0.75) and summary[0]["parameters"] == 1
    assert summary[-1]["test_accuracy"] == 0.6 and summary[-1]["test_macro_f1"] == 0.375
