"""rows.py: the readers (CSV, TSV, JSONL) on the real files and on crafted ones, and their one-line errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from softprompt.data.tasks import (
    read_rows,
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


def test_bad_byte_offset_counts_from_the_file_start(tmp_path):
    path = tmp_path / "big.csv"
    body = b"text,label\n" + b"".join(b"row %d,a\n" % i for i in range(5000))
    path.write_bytes(body + b"caf\xe9,a\n")
    with pytest.raises(SoftpromptError, match=f"offset {len(body) + 3}, line 5002"):
        read_rows(path)
