"""`compare`: the three methods on the real default model, one seed, a step each: the CSV, the PNG, going on
where it stopped, and `--plot` redrawing from the CSV."""

from __future__ import annotations

import subprocess
import sys

import pytest

from softprompt import compare
from softprompt.compare import COLUMNS, METHODS, parameter_count, run_compare
from softprompt.models import load_base
from softprompt.results_table import read_csv
from softprompt.tasks import load_named
from softprompt.train import TrainConfig


def test_compare_three_methods_on_the_default_model(data_dir, tmp_path, monkeypatch):
    output = tmp_path / "cmp"
    config = TrainConfig(model="smollm2-135m", task="raft/twitter_complaints", data_dir=str(data_dir),
                         dev_fraction=0.2, max_steps=1, batch_size=4, dtype="float32", output=str(output),
                         progress=False)  # fmt: skip
    _, test_rows, _ = load_named("raft/twitter_complaints", "test", data_dir)
    results = run_compare(config, ["smollm2-135m"], METHODS, [0], test_rows[:16], output, shots=2)
    table = read_csv(output / "compare.csv", compare.INTEGERS)
    assert [r["method"] for r in table] == list(METHODS) and table == results
    assert list(table[0]) == list(COLUMNS)
    assert {r["parameters"] for r in table} == {134_515_008}  # SmolLM2-135M, its embeddings tied
    assert all(r["test_n"] == 16 and 0 <= r["test_macro_f1"] <= 1 and r["dev_accuracy"] != "" for r in table)
    assert len({r["majority_accuracy"] for r in table}) == 1  # the same held-out rows for every method
    assert (output / "compare.png").stat().st_size > 5000
    assert (output / "runs" / "smollm2-135m" / "model-tuning" / "seed-0" / "model.safetensors").is_file()

    # A rerun goes on where the table stopped: nothing left to run
    monkeypatch.setattr(compare, "_run", lambda *a: pytest.fail("a finished run ran again"))
    assert run_compare(config, ["smollm2-135m"], METHODS, [0], test_rows[:16], output) == table

    (output / "compare.png").unlink()
    done = subprocess.run([sys.executable, "-m", "softprompt", "compare", "--plot", str(output / "compare.csv")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (output / "compare.png").stat().st_size > 5000


def test_parameter_count_sees_through_prepacked_weights(tiny_dir):
    """bfloat16 on a CPU that runs it natively prepacks the linear weights out of `parameters()`."""
    plain = parameter_count(load_base(str(tiny_dir), "float32")[0], str(tiny_dir))
    assert parameter_count(load_base(str(tiny_dir), "bfloat16")[0], str(tiny_dir)) == plain
    assert plain == sum(p.numel() for p in load_base(str(tiny_dir), "float32")[0].parameters())
