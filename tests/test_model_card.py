"""The model card every trained or designed prompt folder gets: the Hub's front matter, metrics equal to the
run's own records, every recipe field, and a folder PEFT still loads; `eval --record` adds held-out results."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import yaml
from peft import PeftModel

from softprompt.prompts.model_card import CARD
from softprompt.toolbox.prompt_design import run_design
from softprompt.training.train import TrainConfig, fit


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def _table_rows(card: str, heading: str) -> list[list[str]]:
    section = card.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows]


def test_train_writes_a_card_peft_still_loads_real_model(smollm2, data_dir, tmp_path):
    model, _ = smollm2
    config = TrainConfig(task="raft/twitter_complaints", data_dir=str(data_dir), dev_fraction=0.2,
                         num_virtual_tokens=4, max_steps=4, batch_size=8, eval_every=2, keep_best="loss",
                         output=str(tmp_path / "run"), progress=False, dtype="float32")  # fmt: skip
    fit(config, base=smollm2)
    card = (tmp_path / "run" / CARD).read_text()
    front = _front_matter(card)
    assert front["base_model"] == "smollm2-135m" and front["library_name"] == "softprompt"
    assert "peft" in front["tags"] and front["datasets"] == ["ought/raft"]
    meta = json.loads((tmp_path / "run" / "softprompt.json").read_text())
    dev = front["model-index"][0]["results"][0]["metrics"]
    assert dev[0]["value"] == round(meta["metrics"]["accuracy"], 4)
    assert dev[1]["value"] == round(meta["metrics"]["macro_f1"], 4)
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    head, *log = _table_rows(card, "## Training log")
    shown = dict(zip(head, log[-1]))
    assert int(shown["step"]) == last["step"] == 4
    for key in ("eval_loss", "accuracy", "macro_f1"):
        assert float(shown[key]) == round(last[key], 4)
    recipe = dict(_table_rows(card, "## Recipe")[1:])
    assert {f"`{field.name}`" for field in dataclasses.fields(TrainConfig)} <= recipe.keys()
    assert recipe["`max_steps`"] == "`4`"
    assert "![training curves](curves.png)" in card and "PeftModel.from_pretrained" in card
    assert "Confusion matrix" in card and meta["train_seconds"] > 0
    peft = PeftModel.from_pretrained(model, tmp_path / "run")  # the card beside the adapter changes nothing
    try:
        assert peft.peft_config["default"].num_virtual_tokens == 4
    finally:
        peft.unload() if hasattr(peft, "unload") else None


def test_eval_record_adds_held_out_results_to_card_and_metadata_real_model(smollm2, data_dir, tmp_path):
    config = TrainConfig(task="raft/twitter_complaints", data_dir=str(data_dir), dev_fraction=0.2, shots=2,
                         output=str(tmp_path / "design"), dtype="float32")  # fmt: skip
    run_design(config, base=smollm2)
    assert "## Recipe" in (tmp_path / "design" / CARD).read_text()
    done = subprocess.run(
        [sys.executable, "-m", "softprompt", "eval", str(tmp_path / "design"), "--task", "raft/twitter_complaints",
         "--data-dir", str(data_dir), "--split", "test", "--limit", "20", "--dtype", "float32", "--record"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    meta = json.loads((tmp_path / "design" / "softprompt.json").read_text())
    recorded = meta["evaluations"]["test split, first 20 rows"]  # named by the split, not this machine's path
    assert recorded["accuracy"] == result["accuracy"] and recorded["confusion_matrix"] == result["confusion_matrix"]
    card = (tmp_path / "design" / CARD).read_text()
    rows = {row[0]: row for row in _table_rows(card, "## Results")}
    held_out = rows["held-out: test split, first 20 rows"]
    assert held_out[1] == "20" and float(held_out[2]) == round(result["accuracy"], 3)
    scored = _front_matter(card)["model-index"][0]["results"]
    assert [r["dataset"]["name"] for r in scored] == [
        "raft/twitter_complaints (dev)",
        "raft/twitter_complaints (test split, first 20 rows)",
    ]
