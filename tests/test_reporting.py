"""`--report-to tensorboard`: the event files, read back with TensorBoard's own reader, hold exactly
metrics.jsonl's scalars, also across a run killed after its checkpoint and resumed."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from softprompt.training.reporting import TENSORBOARD_DIR, TensorBoard
from softprompt.training.train import TrainConfig, fit
from softprompt.utils.errors import ParameterError


class Killed(Exception):
    pass


def test_events_equal_metrics_across_a_resume_real_model(smollm2, data_dir, tmp_path, monkeypatch):
    config = TrainConfig(task="raft/twitter_complaints", data_dir=str(data_dir), dev_fraction=0.2,
                         num_virtual_tokens=4, max_steps=6, batch_size=8, eval_every=1, save_steps=2,
                         output=str(tmp_path / "run"), progress=False, dtype="float32",
                         report_to="tensorboard")  # fmt: skip
    log = TensorBoard.log

    def killed_after_step_3(self, record):  # logged step 3 everywhere, then died before the step-4 checkpoint
        log(self, record)
        if record["step"] == 3:
            raise Killed

    monkeypatch.setattr(TensorBoard, "log", killed_after_step_3)
    with pytest.raises(Killed):
        fit(config, base=smollm2)
    monkeypatch.setattr(TensorBoard, "log", log)
    fit(config, base=smollm2, resume=True)  # from the step-2 checkpoint: step 3 is logged again

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    events = EventAccumulator(str(tmp_path / "run" / TENSORBOARD_DIR))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {key for key in records[-1] if key != "step"}
    for tag in tags:
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [step for step, _ in logged] == [r["step"] for r in records if tag in r]  # no step twice
        assert [value for _, value in logged] == pytest.approx([r[tag] for r in records if tag in r], rel=1e-6)


def test_report_to_needs_its_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name))
    with pytest.raises(ParameterError, match=r"pip install 'softprompt\[tensorboard\]'"):
        TrainConfig(task="raft/twitter_complaints", report_to="tensorboard").validate()
