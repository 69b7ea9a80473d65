"""Readers, templates, verbalizers, dev splits and the Encoder: no model is loaded here, only the default
model's tokenizer."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from softprompt.data.batching import Encoder, pad_left, target_batch
from softprompt.data.tasks import (
    Task,
    labels_found,
    load_named,
    parse_labels,
    parse_mapping,
    read_rows,
    split_dev,
)
from softprompt.utils.errors import SoftpromptError

RAFT = "raft_twitter_complaints/train.csv"
RAFT_TEMPLATE = "Tweet text : {Tweet text} Label : "


def raw_tsv_rows(path) -> tuple[list[str], list[list[str]]]:
    """The file split by hand (BOM dropped, no quote handling at all): what a GLUE TSV reader must return."""
    lines = path.read_text(encoding="utf-8-sig").split("\n")
    lines = [line.removesuffix("\r") for line in lines if line]
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


# --- readers on the real files -------------------------------------------------------------------------------


def test_read_raft_csv(data_dir):
    """The RAFT CSV has quoted tweets with commas; the header has a field with a space."""
    rows = read_rows(data_dir / RAFT)
    assert len(rows) == 50
    assert all(list(row) == ["Tweet text", "Label", "ID"] for row in rows)
    assert [row["ID"] for row in rows] == [str(i) for i in range(50)]
    assert Counter(row["Label"] for row in rows) == {"complaint": 17, "no complaint": 33}
    # Row 2 is quoted in the file because it holds a comma: the quotes go, the comma stays.
    assert rows[1]["Tweet text"].startswith("@KristaMariePark Thank you for your interest! If you decide to cancel,")
    assert not rows[1]["Tweet text"].startswith('"')


def test_read_sst2_tsv_is_verbatim(data_dir):
    """GLUE TSVs are unquoted: every field must come back byte for byte, trailing spaces and quotes included."""
    path = data_dir / "sst2/dev.tsv"
    rows = read_rows(path)
    header, raw = raw_tsv_rows(path)
    assert header == ["sentence", "label"]
    assert len(rows) == 872
    assert [list(row.values()) for row in rows] == raw
    assert Counter(row["label"] for row in rows) == {"0": 428, "1": 444}
    assert rows[0]["sentence"] == "it 's a charming and often affecting journey . "
    quoted = [row for row in rows if '"' in row["sentence"]]
    assert all(list(row.values()) in raw for row in quoted)  # holds trivially if SST-2 dev has no quote chars


def test_read_mrpc_tsv_strips_bom_and_keeps_quotes(data_dir):
    """MRPC starts with a UTF-8 BOM and has unbalanced quote chars, which QUOTE_NONE must leave alone."""
    path = data_dir / "mrpc/dev.tsv"
    rows = read_rows(path)
    assert len(rows) == 408
    assert list(rows[0]) == ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    assert not any("\ufeff" in key for key in rows[0])
    assert Counter(row["Quality"] for row in rows) == {"1": 279, "0": 129}
    # Row 1's second sentence opens a quote it never closes: a quoting reader would swallow later rows.
    assert rows[0]["#2 String"] == '"The foodservice pie business does not fit our long-term growth strategy.'
    _, raw = raw_tsv_rows(path)
    assert [list(row.values()) for row in rows] == raw
    assert sum('"' in value for row in rows for value in row.values()) > 10


def test_read_cr_jsonl(data_dir):
    path = data_dir / "cr/train.jsonl"
    rows = read_rows(path)
    expected = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) == 1775
    assert rows == expected
    assert {row["label"] for row in rows} == {"0", "1"}


# --- readers on crafted files -----------------------------------------------------------------------------------


def test_csv_quoted_commas_newlines_quotes(tmp_path):
    """RFC 4180 quoting: commas, embedded newlines (LF and CRLF) and doubled quotes survive."""
    path = tmp_path / "quoted.csv"
    path.write_bytes(
        b"text,label\r\n"
        b'"one, two, three",a\r\n'
        b'"line 1\nline 2",b\r\n'
        b'"he said ""hi"", then left",a\r\n'
        b'"crlf\r\ninside",b\r\n'
        b"plain,a\r\n"
    )
    rows = read_rows(path)
    assert rows == [
        {"text": "one, two, three", "label": "a"},
        {"text": "line 1\nline 2", "label": "b"},
        {"text": 'he said "hi", then left', "label": "a"},
        {"text": "crlf\r\ninside", "label": "b"},
        {"text": "plain", "label": "a"},
    ]


def test_csv_round_trips_what_csv_writer_writes(csv_file):
    values = ["comma, here", "new\nline", 'quote " inside', '"fully quoted"', "  spaces  ", "ünïcödé"]
    path = csv_file([["text", "label"], *[[v, str(i)] for i, v in enumerate(values)]])
    assert [row["text"] for row in read_rows(path)] == values


def test_jsonl_non_string_values_become_json_text(tmp_path):
    path = tmp_path / "data.jsonl"
    record = {"text": "hi", "label": 1, "score": 0.5, "ok": True, "none": None, "tags": ["a", "b"], "n": {"k": 2}}
    path.write_text(json.dumps(record) + "\n\n" + json.dumps({"text": "yo", "label": 0}) + "\n", encoding="utf-8")
    rows = read_rows(path)
    assert rows[0] == {
        "text": "hi",
        "label": "1",
        "score": "0.5",
        "ok": "true",
        "none": "null",
        "tags": '["a", "b"]',
        "n": '{"k": 2}',
    }
    assert rows[1] == {"text": "yo", "label": "0"}  # the blank line is skipped


@pytest.mark.parametrize(
    "name, data, needle",
    [
        ("missing.csv", None, "no such file"),
        ("data.xlsx", b"a,b\n1,2\n", "unknown file type"),
        ("empty.csv", b"", "empty file"),
        ("header.csv", b"text,label\n", "no rows"),
        ("header.tsv", b"text\tlabel\n\n", "no rows"),
        ("empty.jsonl", b"\n\n", "no rows"),
        ("ragged.csv", b"text,label\nok,a\nno label\n", "row 2 (line 3): 1 fields, header has 2"),
        ("dup.csv", b"text,text\n1,2\n", "duplicate column 'text'"),
        ("bad.jsonl", b'{"text": "ok"}\n{"text": \n', "line 2: not JSON"),
        ("list.jsonl", b'["text"]\n', "line 1: expected a JSON object"),
        ("latin1.csv", b"text,label\ncaf\xe9,a\n", "not UTF-8 text (bad byte at offset 14, line 2)"),
    ],
)
def test_read_rows_errors(tmp_path, name, data, needle):
    """Each bad file is a SoftpromptError that names the file and says what is wrong."""
    path = tmp_path / name
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(SoftpromptError) as info:
        read_rows(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert needle in message
    assert "\n" not in message


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


# --- Encoder ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    """SmolLM2's tokenizer, read from the converted model's folder (a fresh machine converts the GGUF once)."""
    from transformers import AutoTokenizer

    from softprompt.models.base import resolve

    return AutoTokenizer.from_pretrained(resolve("smollm2-135m"))


def token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_label_ids_end_with_eos(tokenizer):
    task = Task("Sentence : {sentence} Sentiment : ", "label", ["0", "1"], {"0": "negative", "1": "positive"})
    encoder = Encoder(task, tokenizer, 64)
    eos = tokenizer.eos_token_id
    assert eos is not None
    assert encoder.label_ids == [token_ids(tokenizer, "negative") + [eos], token_ids(tokenizer, "positive") + [eos]]


def test_short_input_is_not_cut(tokenizer):
    task = Task(RAFT_TEMPLATE, "Label", ["complaint", "no complaint"])
    encoder = Encoder(task, tokenizer, 64)
    row = {"Tweet text": "@shop where is my parcel"}
    assert encoder.input_ids(row) == token_ids(tokenizer, task.render(row))


def test_long_input_is_cut_in_the_middle_keeping_the_tail(tokenizer):
    """Input + longest label fit max_length; the head and the template's tail (" Label : ") survive."""
    task = Task(RAFT_TEMPLATE, "Label", ["complaint", "no complaint"])
    encoder = Encoder(task, tokenizer, max_length=24)
    row = {"Tweet text": " ".join(f"word{i}" for i in range(300))}
    full = token_ids(tokenizer, task.render(row))
    ids = encoder.input_ids(row)
    longest_label = max(len(label) for label in encoder.label_ids)
    assert len(ids) + longest_label == 24  # cut to the budget exactly, not below it
    tail = token_ids(tokenizer, " Label : ")
    assert ids[-len(tail) :] == tail
    assert tokenizer.decode(ids).endswith(" Label : ")
    assert ids[: len(ids) - len(tail)] == full[: len(ids) - len(tail)]
    assert tokenizer.decode(ids).startswith("Tweet text : word0 word1")
    # Every label, appended, fits.
    assert all(len(ids) + len(label) <= 24 for label in encoder.label_ids)


def test_max_length_too_small(tokenizer):
    task = Task(RAFT_TEMPLATE, "Label", ["complaint", "no complaint"])
    with pytest.raises(SoftpromptError, match="max_length: 5"):
        Encoder(task, tokenizer, max_length=5)


def test_pad_left_and_mask(tokenizer):
    pad = tokenizer.pad_token_id
    assert pad is not None
    ids, mask = pad_left([[5, 6, 7], [8], []], pad, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [pad, pad, 8], [pad, pad, pad]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]


def test_target_batch_appends_targets():
    batch = target_batch([[1, 2, 3], [4]], [[9, 2], [7, 8, 2]], 0, device="cpu")
    assert batch.input_ids.tolist() == [[1, 2, 3, 9, 2], [0, 4, 7, 8, 2]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]
    assert batch.target_lengths.tolist() == [2, 3]


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


def test_bad_byte_offset_counts_from_the_file_start(tmp_path):
    path = tmp_path / "big.csv"
    body = b"text,label\n" + b"".join(b"row %d,a\n" % i for i in range(5000))
    path.write_bytes(body + b"caf\xe9,a\n")
    with pytest.raises(SoftpromptError, match=f"offset {len(body) + 3}, line 5002"):
        read_rows(path)
