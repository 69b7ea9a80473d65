"""Property tests (hypothesis) for the readers, templates and option parsers: arbitrary data either works
(and round-trips where the format can hold it) or fails with a one-line SoftpromptError naming its source.

Every test sets max_examples explicitly, so the number of examples tried is known (200 each unless noted).
No model runs here.
"""

from __future__ import annotations

import csv
import io
import json
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from softprompt.data.label_options import labels_found, parse_labels, parse_mapping
from softprompt.data.tasks import Task, read_rows, split_dev
from softprompt.utils.errors import SoftpromptError

EXAMPLES = 200


def fast(max_examples: int = EXAMPLES) -> settings:
    """Known example count, no deadline (huge fields), no example database written into the repository."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# What str.splitlines() breaks on: a "one-line" message contains none of these.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def one_line(text: str) -> bool:
    return not any(char in text for char in LINE_BREAKS)


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="softprompt-props-") as folder:
        yield Path(folder)


# --- strategies ---------------------------------------------------------------------------------------------

TRICKY = ['"', "'", ",", ";", "\t", "\n", "\r", "\r\n", "\ufeff", " ", "\x00", "\\", "{", "}", "=", "é", "日", "\u2028",
          "\x85", "\x0b", "🙂"]  # fmt: skip


def texts(exclude: str = "", max_size: int = 12) -> st.SearchStrategy[str]:
    """Arbitrary Unicode (no surrogates: files are UTF-8) mixed with quotes, separators and line breaks."""
    tricky = [t for t in TRICKY if not any(c in exclude for c in t)]
    pieces = st.one_of(
        st.sampled_from(tricky), st.text(st.characters(codec="utf-8", exclude_characters=exclude), max_size=4)
    )
    return st.lists(pieces, max_size=max_size).map("".join)


def numbers() -> st.SearchStrategy[str]:
    return st.one_of(st.integers(-(10**12), 10**12).map(str), st.floats(allow_nan=False).map(repr))


def comma_labels() -> st.SearchStrategy[str]:
    return st.builds(
        lambda a, b: f"{a},{b}", st.sampled_from(["yes", "no", "1", "a b"]), st.sampled_from(["x", "", " 2"])
    )


def cell_values(exclude: str = "") -> st.SearchStrategy[str]:
    return st.one_of(st.just(""), texts(exclude), numbers(), comma_labels().filter(lambda s: not set(s) & set(exclude)))


def huge(exclude: str = "") -> st.SearchStrategy[str]:
    """A ~100k-character field (built by repetition so the draw itself stays small)."""
    chunk = st.sampled_from([c for c in ['"', ",", "\n", "\t", "a", "é", "\r\n", "x y"] if not set(c) & set(exclude)])
    return st.builds(lambda piece, n: (piece * (n // len(piece) + 1))[:n], chunk, st.integers(90_000, 110_000))


def column_names(exclude: str = "") -> st.SearchStrategy[str]:
    # A name starting with U+FEFF cannot survive in the first column (the reader drops a leading BOM).
    return st.one_of(
        st.sampled_from(["text", "label", "a", "b", "Tweet text", "a.b", "x[0]", "1", ""]), texts(exclude, 6)
    ).filter(lambda name: not name.startswith("\ufeff"))


@st.composite
def tables(draw, exclude: str = ""):
    """(header, rows, expected_error): a table that may have duplicate names, ragged rows or a huge field."""
    width = draw(st.integers(1, 4))
    names = draw(st.lists(column_names(exclude), min_size=width, max_size=width))
    if width > 1 and draw(st.integers(0, 5)) == 0:
        names[-1] = names[0]  # duplicate column name
    rows = draw(st.lists(st.lists(cell_values(exclude), min_size=width, max_size=width), max_size=5))
    if rows and draw(st.integers(0, 9)) == 0:
        row = draw(st.integers(0, len(rows) - 1))
        rows[row][draw(st.integers(0, width - 1))] = draw(huge(exclude))
    if rows and draw(st.integers(0, 9)) == 0:
        rows[draw(st.integers(0, len(rows) - 1))].append("extra")  # one field too many
    return names, rows


def expected_delimited(names: list[str], rows: list[list[str]], tsv: bool) -> list[dict] | None:
    """What read_rows must return for this table, or None where it must raise SoftpromptError."""
    if tsv and names == [""]:
        return None  # the header line is blank
    if len(set(names)) < len(names):
        return None
    kept = [row for row in rows if not (tsv and row == [""])]  # a blank TSV line is no row
    if not kept or any(len(row) != len(names) for row in kept):
        return None
    return [dict(zip(names, row)) for row in kept]


def write_csv(path: Path, names, rows, bom: bool, terminator: str) -> None:
    # csv.writer only quotes the line-break characters of its own lineterminator, so minimal quoting holds any
    # text only with "\r\n"; other line endings are written with every field quoted.
    quoting = csv.QUOTE_MINIMAL if terminator == "\r\n" else csv.QUOTE_ALL
    handle = io.StringIO(newline="")
    csv.writer(handle, lineterminator=terminator, quoting=quoting).writerows([names, *rows])
    path.write_text(("\ufeff" if bom else "") + handle.getvalue(), encoding="utf-8", newline="")


def write_tsv(path: Path, names, rows, bom: bool, terminator: str, final: bool) -> None:
    text = terminator.join("\t".join(row) for row in [names, *rows]) + (terminator if final else "")
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8", newline="")


def assert_error(exc: SoftpromptError, source: str) -> None:
    message = str(exc)
    event("SoftpromptError")
    assert message.startswith(source), message
    assert one_line(message), repr(message)


# --- templates built to match the rows (an independent oracle for render) -------------------------------------

UNSAFE_IN_FIELD = "{}[]:!"


def template_safe(name: str) -> bool:
    return bool(name) and not set(name) & set(UNSAFE_IN_FIELD)


@st.composite
def tasks_for(draw, rows: list[dict]):
    """(task, template parts) where parts are (literal, field or None); fields mostly name real columns."""
    columns = list(rows[0])
    usable = [c for c in columns if template_safe(c)]
    fitting = draw(st.booleans())  # half the tasks are built to fit the rows, so check() often passes
    other = st.text(st.characters(exclude_characters=UNSAFE_IN_FIELD), min_size=1, max_size=5)
    field_choice = st.one_of(
        st.none(),
        st.sampled_from(usable) if usable else st.nothing(),
        st.nothing() if fitting else other.filter(lambda n: n not in columns),
    )
    parts = draw(st.lists(st.tuples(texts(max_size=4), field_choice), max_size=3))
    template = "".join(lit.replace("{", "{{").replace("}", "}}") + ("{" + f + "}" if f else "") for lit, f in parts)
    if fitting:
        label_field = draw(st.sampled_from(columns))
    else:
        label_field = draw(st.one_of(st.none(), st.sampled_from(columns), column_names()))
    seen = sorted({row[label_field] for row in rows if label_field in row})
    if fitting or not seen:
        labels = seen
    else:
        labels = draw(st.lists(st.sampled_from(seen), unique=True))
    labels = labels + draw(st.lists(comma_labels(), max_size=2))
    return Task(template, label_field, labels), parts


def rendered(parts, row: dict) -> str:
    """What the template should render for `row`, from the (literal, field) parts it was drawn from."""
    return "".join(lit + (row.get(f, "") if f else "") for lit, f in parts)


def check_should_pass(task: Task, parts, rows: list[dict], labelled: bool) -> bool:
    columns = rows[0].keys()
    if any(f not in columns for f in task.fields):
        return False
    if labelled and (task.label_field is None or task.label_field not in columns):
        return False
    known = set(task.labels)
    for row in rows:
        if any(f not in row for f in task.fields):
            return False
        if not rendered(parts, row).strip():  # an empty input
            return False
        if labelled and row.get(task.label_field) not in known:
            return False
    return True


def exercise_task(data, rows: list[dict], source: str) -> None:
    """check() passes exactly when it should (else a SoftpromptError naming the source); render() fills fields."""
    task, parts = data.draw(tasks_for(rows))
    for labelled in (True, False):
        should_pass = check_should_pass(task, parts, rows, labelled)
        try:
            task.check(rows, source, labelled=labelled)
        except SoftpromptError as exc:
            assert not should_pass, f"check refused good rows: {exc}"
            assert_error(exc, source)
            event(f"check(labelled={labelled}) refused")
        else:
            assert should_pass, "check accepted rows it should refuse"
            event(f"check(labelled={labelled}) passed")
    for row in rows:
        assert task.render(row) == rendered(parts, row)


# --- readers ------------------------------------------------------------------------------------------------


@fast()
@given(table=tables(), bom=st.booleans(), terminator=st.sampled_from(["\r\n", "\n", "\r"]), data=st.data())
def test_csv_round_trips_or_fails_cleanly(workdir, table, bom, terminator, data):
    """CSV written by csv.writer holds any text: read_rows gives it back exactly, or refuses with the path."""
    names, rows = table
    path = workdir / "data.csv"
    write_csv(path, names, rows, bom, terminator)
    assert_read_back(path, expected_delimited(names, rows, tsv=False), data)


def assert_read_back(path: Path, expected: list[dict] | None, data) -> None:
    """read_rows gives `expected` back exactly, or (expected None) refuses with a one-line error naming the path."""
    try:
        got = read_rows(path)
    except SoftpromptError as exc:
        assert expected is None, f"refused a well-formed file: {exc}"
        assert_error(exc, str(path))
        return
    assert got == expected
    event("rows read")
    if got[0]:  # a JSONL object may have no keys, leaving no field to template
        exercise_task(data, got, str(path))


TSV_EXCLUDE = "\t\n\r"


@fast()
@given(
    table=tables(exclude=TSV_EXCLUDE),
    bom=st.booleans(),
    terminator=st.sampled_from(["\n", "\r\n", "\r"]),
    final=st.booleans(),
    data=st.data(),
)
def test_tsv_round_trips_or_fails_cleanly(workdir, table, bom, terminator, final, data):
    """GLUE-style TSV (no quoting) holds fields without tabs and line breaks; quotes are literal text."""
    names, rows = table
    path = workdir / "data.tsv"
    write_tsv(path, names, rows, bom, terminator, final)
    assert_read_back(path, expected_delimited(names, rows, tsv=True), data)


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**30), 10**30),
        st.floats(),  # NaN and infinities included: json writes NaN/Infinity and reads them back
        texts(),
        st.text(max_size=3),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)

json_strings = st.one_of(texts(), numbers(), comma_labels(), st.just(""))


@st.composite
def jsonl_files(draw):
    """(text, expected rows or None): objects with varying and duplicate keys, blank lines, bad lines."""
    pool = draw(st.lists(column_names(), min_size=1, max_size=4))
    ensure_ascii = draw(st.booleans())
    terminator = draw(st.sampled_from(["\n", "\r\n"]))
    lines, rows, bad = [], [], False
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["object"] * 6 + ["blank", "not-object", "not-json"]))
        if kind == "object":
            value = st.one_of(json_strings, json_values) if draw(st.booleans()) else json_strings
            pairs = draw(st.lists(st.tuples(st.sampled_from(pool), value), max_size=4))
            if pairs and draw(st.integers(0, 4)) == 0:
                pairs.append((pairs[0][0], draw(json_strings)))  # duplicate key: the last one wins
            lines.append(
                "{" + ", ".join(f"{json.dumps(k, ensure_ascii=ensure_ascii)}: "
                                f"{json.dumps(v, ensure_ascii=ensure_ascii)}" for k, v in pairs) + "}"
            )  # fmt: skip
            rows.append({k: v if isinstance(v, str) else json.dumps(v) for k, v in pairs})
        elif kind == "blank":
            lines.append(draw(st.sampled_from(["", " ", "\t"])))
        elif kind == "not-object":
            lines.append(json.dumps(draw(st.one_of(st.lists(st.integers(), max_size=2), st.integers(), texts()))))
            bad = True
        else:
            lines.append(draw(st.sampled_from(["{", "x", '{"a": }', "{'a': 1}", "[1,", '"open'])))
            bad = True
    text = terminator.join(lines) + draw(st.sampled_from(["", terminator]))
    return ("\ufeff" if draw(st.booleans()) else "") + text, (None if bad or not rows else rows)


@fast()
@given(file=jsonl_files(), data=st.data())
def test_jsonl_reads_objects_or_fails_cleanly(workdir, file, data):
    """JSONL objects come back with non-string values as their JSON text; anything else is a clean error."""
    text, expected = file
    path = workdir / "data.jsonl"
    path.write_text(text, encoding="utf-8", newline="")
    assert_read_back(path, expected, data)


def rows_or_clean_error(path: Path) -> list[dict] | None:
    """The rows of `path`, or None after checking that the refusal is a one-line error naming the path."""
    try:
        rows = read_rows(path)
    except SoftpromptError as exc:
        assert_error(exc, str(path))
        return None
    event("rows read")
    return rows


def assert_rows_or_clean_error(path: Path) -> None:
    rows = rows_or_clean_error(path)
    if rows is None:
        return
    assert rows and all(isinstance(row, dict) for row in rows)
    header = list(rows[0])
    for row in rows:
        assert list(row) == header  # delimited files: every row has the header's columns, in order
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in row.items())


byte_pieces = [b"a", b"1", b",", b'"', b"\t", b"\n", b"\r", b"\r\n", b"\xef\xbb\xbf", b"\xc3\xa9", b"\xff", b"\x00",
               b" "]  # fmt: skip


@fast()
@given(
    data=st.one_of(st.binary(max_size=600), st.lists(st.sampled_from(byte_pieces), max_size=60).map(b"".join)),
    bom=st.booleans(),
    suffix=st.sampled_from([".csv", ".tsv"]),
)
def test_arbitrary_bytes_give_rows_or_a_clean_error(workdir, data, bom, suffix):
    path = workdir / f"bytes{suffix}"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    assert_rows_or_clean_error(path)


@fast()
@given(text=texts(max_size=40), suffix=st.sampled_from([".csv", ".tsv"]))
def test_arbitrary_text_gives_rows_or_a_clean_error(workdir, text, suffix):
    """Text full of quotes, separators and stray line breaks (more likely to look like CSV than random bytes)."""
    path = workdir / f"text{suffix}"
    path.write_text(text, encoding="utf-8", newline="")
    assert_rows_or_clean_error(path)


json_pieces = [b"{", b"}", b"[", b"]", b'"a"', b'"b"', b":", b",", b" ", b"1", b"-1.5e3", b"null", b"true", b"NaN",
               b'"', b"\\u00e9", b"\\ud800", b"\n", b"\r\n", b"\xef\xbb\xbf", b"\xff"]  # fmt: skip


@fast()
@given(
    data=st.one_of(
        st.binary(max_size=400),
        st.lists(st.sampled_from(json_pieces), max_size=60).map(b"".join),
        st.sampled_from([b'{"a": ' + b"1" * 5000 + b"}", b"[" * 100_000]),  # huge integer, very deep nesting
    )
)
def test_arbitrary_bytes_as_jsonl_give_rows_or_a_clean_error(workdir, data):
    path = workdir / "bytes.jsonl"
    path.write_bytes(data)
    rows = rows_or_clean_error(path)
    if rows is not None:
        assert rows and all(isinstance(k, str) and isinstance(v, str) for row in rows for k, v in row.items())


# --- templates ----------------------------------------------------------------------------------------------

template_texts = st.lists(
    st.one_of(st.sampled_from(["{", "}", "{{", "}}", "!", ":", "[", "]", ".", "r", "s", "a", "0", "text", " ", "\n"]),
              st.sampled_from(["{text}", "{a.b}", "{x[0]}", "{0}", "{ }", "{text!r}", "{a!s:}", "{a:>5}", "{a:{b}}",
                               "{a!x}", "{a:d}", "{a[}", "{!r}"]),
              st.text(max_size=3)),
    max_size=12,
).map("".join)  # fmt: skip


def plain_render(template: str, row: dict) -> str:
    """The oracle for templates whose fields have no format spec: literal text, then the (converted) value."""
    out = []
    for literal, name, _, conversion in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            value = row.get(name, "")
            out.append({None: str, "r": repr, "s": str, "a": ascii}[conversion](value))
    return "".join(out)


@fast()
@given(template=template_texts, value=texts(max_size=4))
def test_templates_construct_or_raise_softprompt_error(template, value):
    try:
        task = Task(template, "label", ["x"])
    except SoftpromptError as exc:
        assert_error(exc, "template")
        return
    parsed = list(string.Formatter().parse(template))
    assert task.fields == [name for _, name, _, _ in parsed if name is not None]
    assert all(task.fields)
    assert all(not spec and conv is None for _, name, spec, conv in parsed if name is not None)
    row = {name: value for name in task.fields}
    assert task.render(row) == plain_render(template, row)
    assert task.render({}) == plain_render(template, {})  # a missing field renders empty


# --- option parsers -----------------------------------------------------------------------------------------

option_texts = st.lists(
    st.one_of(st.sampled_from([",", "\\", "\\,", "=", " ", "a", "1", "\n"]), st.text(max_size=3)), max_size=12
).map("".join)


@fast()
@given(text=option_texts)
def test_parse_labels_and_mapping_on_arbitrary_strings(text):
    labels = parse_labels(text)
    assert all(isinstance(label, str) and label and label == label.strip() for label in labels)
    try:
        mapping = parse_mapping(text, "verbalizer")
    except SoftpromptError as exc:
        assert_error(exc, "verbalizer")
        return
    assert all(k and v and k == k.strip() and v == v.strip() for k, v in mapping.items())


def escape(item: str) -> str:
    return item.replace("\\", "\\\\").replace(",", "\\,")


label_items = st.builds(
    lambda before, core, after: (before + core + after).strip(),
    texts(max_size=3),
    st.one_of(st.sampled_from(["x", "1", "a b", "é", "no,yes"]), comma_labels(), numbers()),
    texts(max_size=3),
)  # never blank: blank items are dropped by design


@fast()
@given(labels=st.lists(label_items, max_size=6), separator=st.sampled_from([",", ", ", " , "]))
def test_escaped_labels_survive_parse_labels(labels, separator):
    """Label values with commas (and backslashes) come back whole when written with a backslash before commas."""
    assert parse_labels(separator.join(escape(label) for label in labels)) == labels


@fast()
@given(
    pairs=st.lists(st.tuples(label_items.map(lambda k: k.replace("=", "_")), label_items), max_size=5),
    separator=st.sampled_from([",", ", "]),
)
def test_escaped_mapping_survives_parse_mapping(pairs, separator):
    text = separator.join(f"{escape(k)}={escape(v)}" for k, v in pairs)
    assert parse_mapping(text, "verbalizer") == dict(pairs)


# --- labels_found and split_dev -----------------------------------------------------------------------------

good_row = st.fixed_dictionaries({"label": label_items}, optional={"text": texts(max_size=3)})
label_rows = st.lists(
    st.one_of(good_row, good_row, good_row, good_row, st.just({"label": " "}), st.just({"text": "x"})),
    min_size=1,
    max_size=8,
)


@fast()
@given(rows=label_rows)
def test_labels_found_sorted_unique_or_clean_error(rows):
    try:
        found = labels_found(rows, "label", "train.csv")
    except SoftpromptError as exc:
        assert any("label" not in row or not row["label"].strip() for row in rows)
        assert_error(exc, "train.csv")
        return
    assert found == sorted({row["label"] for row in rows})


@fast()
@given(
    labels=st.lists(st.sampled_from(["a", "b", "c,d", "1"]), min_size=1, max_size=30),
    fraction=st.one_of(st.floats(0.01, 0.99), st.floats(allow_nan=True)),
    seed=st.integers(0, 2**32),
)
def test_split_dev_partitions_stratified(labels, fraction, seed):
    rows = [{"label": label, "n": str(i)} for i, label in enumerate(labels)]
    if not 0 < fraction < 1:
        with pytest.raises(SoftpromptError, match=r"^dev_fraction"):
            split_dev(rows, fraction, seed, "label")
        return
    train, dev = split_dev(rows, fraction, seed, "label")
    assert sorted(int(r["n"]) for r in train + dev) == list(range(len(rows)))
    assert [r["n"] for r in train] == sorted((r["n"] for r in train), key=int)  # original order kept
    for label in set(labels):
        count = labels.count(label)
        assert sum(r["label"] == label for r in dev) == min(count, max(1, round(count * fraction)))
    assert split_dev(rows, fraction, seed, "label") == (train, dev)
