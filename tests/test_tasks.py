"""tasks.py: templates, verbalizers, Task.check, option parsing, the shipped tasks and dev splits (no model)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from softprompt.data.label_options import labels_found, parse_labels, parse_mapping
from softprompt.data.tasks import Task, load_named, read_rows, split_dev
from softprompt.utils.errors import SoftpromptError

RAFT = "raft_twitter_complaints/train.csv"
RAFT_TEMPLATE = "Tweet text : {Tweet text} Label : "


# --- templates ---------------------------------------------------------------------------------------------------


def test_render_field_with_space():
    task = Task(RAFT_TEMPLATE, "Label", ["complaint", "no complaint"])
    assert task.fields == ["Tweet text"]
    row = {"Tweet text": "my order is late {again}", "Label": "complaint", "ID": "3"}
    # Braces in a value are text, not placeholders.
    assert task.render(row) == "Tweet text : my order is late {again} Label : "


def test_render_several_fields_and_escaped_braces():
    task = Task("{{literal}} {#1 String} || {#2 String} ->", "Quality", ["0", "1"])
    assert task.fields == ["#1 String", "#2 String"]
    assert task.render({"#1 String": "a", "#2 String": "b", "Quality": "1"}) == "{literal} a || b ->"


def test_render_real_row(data_dir):
    row = read_rows(data_dir / RAFT)[0]
    text = Task(RAFT_TEMPLATE, "Label", ["complaint", "no complaint"]).render(row)
    assert text == "Tweet text : @HMRCcustomers No this is my first job Label : "


@pytest.mark.parametrize("template", ["Text: {} Label:", "Text: {text Label:", "Text: text} Label:"])
def test_bad_template(template):
    with pytest.raises(SoftpromptError, match="^template"):
        Task(template, "label", ["a"])


def test_verbalizer_words():
    task = Task("{sentence}", "label", ["0", "1", "2"], {"0": "negative", "1": "positive"})
    assert task.label_words == ["negative", "positive", "2"]  # unmapped labels stand for themselves


def test_task_json_round_trip():
    task = Task(RAFT_TEMPLATE, "Label", ["complaint", "no complaint"], {"complaint": "yes"}, "raft", "Classify:")
    again = Task.from_json(json.loads(json.dumps(task.to_json())))
    assert again.to_json() == task.to_json()
    assert again.fields == ["Tweet text"]


# --- Task.check ---------------------------------------------------------------------------------------------------


ROWS = [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}, {"text": "c", "label": "meh"}]


def check_error(task: Task, rows, labelled: bool = True) -> str:
    with pytest.raises(SoftpromptError) as info:
        task.check(rows, "data.csv", labelled)
    return str(info.value)


def test_check_passes_and_unlabelled_skips_labels():
    Task("{text}", "label", ["pos", "neg", "meh"]).check(ROWS, "data.csv")
    Task("{text}", None, []).check(ROWS, "data.csv", labelled=False)


def test_check_no_rows():
    assert check_error(Task("{text}", "label", ["pos"]), []) == "data.csv: no rows"


def test_check_template_field_missing():
    message = check_error(Task("{body} !", "label", ["pos", "neg", "meh"]), ROWS)
    assert message.startswith("data.csv: template field {body} is not a column")
    assert "text, label" in message


def test_check_label_field_missing():
    message = check_error(Task("{text}", "Sentiment", ["pos"]), ROWS)
    assert message.startswith("data.csv: label field 'Sentiment' is not a column")
    assert check_error(Task("{text}", None, []), ROWS).startswith("data.csv: label field None")


def test_check_unknown_label_names_row_and_value():
    message = check_error(Task("{text}", "label", ["pos", "neg"]), ROWS)
    assert message == "data.csv row 3: label='meh' is not one of the labels (pos, neg)"


# --- option parsing -----------------------------------------------------------------------------------------------


def test_parse_mapping():
    assert parse_mapping("0=negative,1=positive", "verbalizer") == {"0": "negative", "1": "positive"}
    assert parse_mapping(" 0 = very bad , 1=good,", "verbalizer") == {"0": "very bad", "1": "good"}
    assert parse_mapping("a\\,b=x\\,y", "verbalizer") == {"a,b": "x,y"}


@pytest.mark.parametrize("text", ["0negative", "0=", "=negative", "0=negative,1"])
def test_parse_mapping_errors(text):
    with pytest.raises(SoftpromptError, match="^verbalizer: expected VALUE=WORD"):
        parse_mapping(text, "verbalizer")


def test_parse_labels():
    assert parse_labels("a\\,b,c") == ["a,b", "c"]
    assert parse_labels("complaint, no complaint") == ["complaint", "no complaint"]
    assert parse_labels("x,,y,") == ["x", "y"]
    assert parse_labels("back\\\\slash") == ["back\\slash"]


def test_labels_found(data_dir):
    """Every distinct value once, sorted."""
    rows = read_rows(data_dir / RAFT)
    found = labels_found(rows, "Label", "train.csv")
    assert sorted(found) == ["complaint", "no complaint"]
    assert len(found) == len(set(found))
    assert labels_found(rows, "Label", "train.csv") == found  # deterministic
    assert found == sorted(found)  # independent of row order


def test_labels_found_errors():
    with pytest.raises(SoftpromptError, match="^train.csv: label field 'Sentiment' is not a column"):
        labels_found(ROWS, "Sentiment", "train.csv")
    with pytest.raises(SoftpromptError, match="^train.csv row 1: empty label"):
        labels_found([{"text": "a", "label": ""}], "label", "train.csv")


def test_load_named_raft_from_data_dir(data_dir):
    task, rows, source = load_named("raft/twitter_complaints", "train", data_dir)
    assert source == str(data_dir / RAFT)
    assert len(rows) == 50 and task.template == RAFT_TEMPLATE
    task.check(rows, source)
    with pytest.raises(SoftpromptError, match="no split 'dev'"):
        load_named("raft/twitter_complaints", "dev", data_dir)
    with pytest.raises(SoftpromptError, match="unknown task 'nope'"):
        load_named("nope", "train", data_dir)


def test_load_named_superglue_rte_few_shot(data_dir):
    """FewGLUE's 32 training and 32 dev examples, scored on SuperGLUE's labelled validation set, which shares
    no example with them (the scale study's third task)."""
    splits = {split: load_named("superglue/rte", split, data_dir) for split in ("train", "dev", "test")}
    assert {split: len(rows) for split, (_, rows, _) in splits.items()} == {"train": 32, "dev": 32, "test": 277}
    for task, rows, source in splits.values():
        task.check(rows, source)
        assert set(task.labels) == {r["label"] for r in rows} == {"entailment", "not_entailment"}
        assert task.label_words == ["True", "False"]
    pairs = [{(r["premise"], r["hypothesis"]) for r in rows} for _, rows, _ in splits.values()]
    assert not pairs[0] & pairs[2] and not pairs[1] & pairs[2]
    task, rows, _ = splits["train"]
    assert task.render(rows[0]).endswith(f"Question : {rows[0]['hypothesis']} True or False ? Answer : ")


# --- dev splits ---------------------------------------------------------------------------------------------------


def test_split_dev_stratified_deterministic_disjoint(data_dir):
    rows = read_rows(data_dir / RAFT)
    train, dev = split_dev(rows, 0.2, 13, "Label")
    ids_train, ids_dev = [r["ID"] for r in train], [r["ID"] for r in dev]
    assert not set(ids_train) & set(ids_dev)
    assert sorted(ids_train + ids_dev, key=int) == [r["ID"] for r in rows]
    assert ids_train == sorted(ids_train, key=int) and ids_dev == sorted(ids_dev, key=int)  # file order kept
    # Stratified: round(17 * 0.2) = 3 complaints and round(33 * 0.2) = 7 others.
    assert Counter(r["Label"] for r in dev) == {"complaint": 3, "no complaint": 7}
    again = split_dev(rows, 0.2, 13, "Label")
    assert again == (train, dev)
    assert split_dev(rows, 0.2, 14, "Label")[1] != dev
    assert len(rows) == 50  # the input list is not consumed or reordered
    assert [r["ID"] for r in rows] == [str(i) for i in range(50)]


def test_split_dev_keeps_one_of_each_label():
    rows = [{"label": "a"}] * 9 + [{"label": "b"}] * 2
    _, dev = split_dev([dict(r) for r in rows], 0.1, 0, "label")
    assert Counter(r["label"] for r in dev) == {"a": 1, "b": 1}


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_split_dev_bad_fraction(fraction):
    with pytest.raises(SoftpromptError, match="^dev_fraction"):
        split_dev(ROWS, fraction, 0, "label")


def test_later_problems_are_named_by_row(tmp_path):
    """Problems past the first row are caught too, and named by their row."""
    with pytest.raises(SoftpromptError, match="^train.csv row 3: empty label"):
        labels_found([{"label": "a"}, {"label": "b"}, {"label": " "}], "label", "train.csv")
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"label": "x"}\n')
    task = Task("{text} =", "label", ["x"])
    with pytest.raises(SoftpromptError, match="rows.jsonl row 2: no field 'text'"):
        task.check(read_rows(path), str(path))


def test_field_names_with_dots_and_brackets_render():
    task = Task("{a.b} / {x[0]}", "label", ["y"])
    assert task.render({"a.b": "one", "x[0]": "two"}) == "one / two"
