"""prompts/record.py: the folder record, typed and versioned; folders written before it (format 1, by the code
of 691b38f: tests/fixtures/folders-v1) load, evaluate and serve as they did."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from softprompt.data.tasks import load_named
from softprompt.prompts.method import PROMPT_DESIGN, PROMPT_TUNING
from softprompt.prompts.record import FORMAT, FolderRecord
from softprompt.prompts.tuned import TunedPrompt
from softprompt.serve.client import Client
from softprompt.utils.errors import SoftpromptError

from .serving import running_server

V1 = Path(__file__).parent / "fixtures" / "folders-v1"
METHODS = {"prompt-tuning": PROMPT_TUNING, "prompt-design": PROMPT_DESIGN}


def _old_predictions(name: str) -> list[dict]:
    """What `softprompt predict` of the old code gave on the test split's first 8 tweets."""
    return [json.loads(line) for line in (V1 / f"{name}.predictions.jsonl").read_text().splitlines()]


def _test_rows(data_dir) -> list[dict]:
    return load_named("raft/twitter_complaints", "test", data_dir)[1][:8]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_format_1_folder_loads_and_predicts_as_the_old_code_did(name, smollm2, data_dir):
    tuned = TunedPrompt.from_pretrained(V1 / name, base=smollm2)
    assert "format" not in json.loads((V1 / name / "softprompt.json").read_text())
    assert tuned.record.method is METHODS[name] and tuned.record.task.name == "raft/twitter_complaints"
    assert tuned.record.seed == 7 and tuned.record.train_config["seed"] == 7 and tuned.record.base_dtype == "float32"
    rows = _test_rows(data_dir)
    for new, old in zip(tuned.predict(rows), _old_predictions(name), strict=True):
        assert new["label"] == old["label"]
        torch.testing.assert_close(torch.tensor(list(new["scores"].values())),
                                   torch.tensor(list(old["scores"].values())), atol=1e-3, rtol=1e-4)  # fmt: skip
    labelled = load_named("raft/twitter_complaints", "train", data_dir)[1][:8]
    assert tuned.evaluate(labelled)["n"] == 8


def test_format_1_folders_serve_the_old_predictions(tmp_path, data_dir):
    for name in METHODS:
        shutil.copytree(V1 / name, tmp_path / name)
    rows = _test_rows(data_dir)
    with running_server("smollm2-135m", tmp_path, "--dtype", "float32") as url:
        client = Client(url)
        for name in METHODS:
            reply = client.classify(name, rows, return_scores=True)
            assert reply["labels"] == [old["label"] for old in _old_predictions(name)]


def test_a_saved_folder_is_format_2_and_reads_back_the_same(tmp_path, smollm2):
    tuned = TunedPrompt.from_pretrained(V1 / "prompt-design", base=smollm2)
    tuned.save_pretrained(tmp_path / "again")
    written = json.loads((tmp_path / "again" / "softprompt.json").read_text())
    assert written["format"] == FORMAT and written["method"] == "prompt-design"
    again = FolderRecord.read(tmp_path / "again")
    assert again == tuned.record
    assert again.examples == FolderRecord.read(V1 / "prompt-design").examples


def test_a_newer_format_or_an_unknown_method_is_one_line(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for data, message in [({"format": FORMAT + 1}, "newer than this softprompt reads"),
                          ({"method": "lora"}, "method: must be one of prompt-tuning")]:  # fmt: skip
        (folder / "softprompt.json").write_text(json.dumps(data))
        with pytest.raises(SoftpromptError, match=message) as error:
            FolderRecord.read(folder)
        assert "\n" not in str(error.value) and str(folder) in str(error.value)


def test_a_peft_folder_without_a_record_reads_as_prompt_tuning(tmp_path):
    assert FolderRecord.read(tmp_path) == FolderRecord() and FolderRecord().method is PROMPT_TUNING
