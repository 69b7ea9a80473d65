"""data/loading.py: a run's task, training rows and evaluation rows, from a shipped task or a file."""

from __future__ import annotations

import dataclasses

import pytest

from softprompt.data.loading import load_data
from softprompt.training.train_config import TrainConfig
from softprompt.utils.errors import ParameterError

RAFT_TEMPLATE = "Tweet text : {Tweet text} Label : "


def test_a_shipped_task_takes_template_and_verbalizer_flags_and_refuses_label_flags(data_dir):
    """--template and --verbalizer reshape a named task (checked as any task); its labels are its own."""
    config = TrainConfig(task="raft/twitter_complaints", data_dir=str(data_dir), template="Tweet : {Tweet text} ? ",
                         verbalizer="complaint=yes,no complaint=no")  # fmt: skip
    task, rows, _ = load_data(config)
    assert task.label_words == ["yes", "no"] and task.fields == ["Tweet text"]
    assert task.render(rows[0]) == f"Tweet : {rows[0]['Tweet text']} ? "
    with pytest.raises(ParameterError, match="'maybe' is not a label"):
        load_data(dataclasses.replace(config, verbalizer="maybe=yes"))
    with pytest.raises(ParameterError, match="takes its label_field, labels and targets from the task"):
        load_data(dataclasses.replace(config, label_field="Label"))


def test_a_file_task_carves_a_stratified_dev_split_and_limits_the_training_rows(data_dir):
    train = str(data_dir / "raft_twitter_complaints" / "train.csv")
    config = TrainConfig(train=train, template=RAFT_TEMPLATE, label_field="Label", dev_fraction=0.25, seed=3)
    task, rows, dev = load_data(config)
    assert task.name == "train" and sorted(task.labels) == ["complaint", "no complaint"]
    assert len(rows) + len(dev) == 50 and len(dev) >= 2
    assert {r["Label"] for r in dev} == set(task.labels)  # every label in dev
    assert not {r["ID"] for r in rows} & {r["ID"] for r in dev}
    assert load_data(config) == (task, rows, dev)  # the same seed, the same split
    limited = load_data(dataclasses.replace(config, train_limit=20, dev_fraction=0.0))
    assert limited.dev is None and 18 <= len(limited.train) <= 22


def test_eval_rows_come_from_the_eval_file_and_a_file_task_needs_its_template(data_dir):
    train = str(data_dir / "raft_twitter_complaints" / "train.csv")
    config = TrainConfig(train=train, eval=train, template=RAFT_TEMPLATE, label_field="Label")
    assert len(load_data(config).dev) == 50
    with pytest.raises(ParameterError, match="needs template and a label_field"):
        load_data(dataclasses.replace(config, template=None))
