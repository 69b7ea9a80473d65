"""Extractive QA files (SQuAD JSON, MRQA jsonl) as rows, with long contexts cut around the question.

SQuAD and MRQA nest questions inside paragraphs, so the row reader cannot read them: here each question becomes
one row of strings. A context can run to hundreds of words, longer than a soft prompt's input budget, and a cut
at the end would often drop the answer. `window` cuts around the sentence that shares most words with the
question instead. It never looks at the answer, so training and evaluation cut the same way and the window
leaks nothing; `answer_in_context` says how often it still loses the answer.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..utils.errors import ParameterError, SoftpromptError
from .rows import Row

__all__ = ["content_words", "read_mrqa", "read_qa", "read_squad", "window"]

# Words too common to say which sentence a question is about.
STOP_WORDS = frozenset(
    "a an the of in on at to for from by with and or but not no is are was were be been being am do does did "
    "has have had what which who whom whose when where why how that this these those it its as into than then "
    "there their they them he she his her him i you we our your can could would should will shall may might "
    "about after before during also if so such other any all some most more many much one".split()
)
_WORD = re.compile(r"\S+")
_TOKEN = re.compile(r"[^\W_]+")  # alphanumeric runs, any script
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*$")  # a word ending a sentence: . ! or ?, maybe then a closing mark


def content_words(text: str) -> set[str]:
    """The lower-cased alphanumeric tokens of `text`, less STOP_WORDS."""
    return set(_TOKEN.findall(text.lower())) - STOP_WORDS


def window(context: str, question: str, words: int) -> str:
    """At most `words` whitespace-separated words of `context`, around the sentence the question is about.

    The rule, which reads the question and never an answer:
    - a context of at most `words` words comes back unchanged;
    - sentences end at a word that ends in `.`, `!` or `?` (maybe followed by closing quotes or brackets),
      that is at sentence-ending punctuation followed by whitespace;
    - each sentence scores the number of the question's content words (see `content_words`) it contains, and
      the best is the highest scoring, the earliest on ties;
    - the window starts at the start of the sentence before the best one where both fit in `words` words,
      else at the best sentence's start, and runs forward for `words` words; where the context ends first, it
      starts earlier instead, so that it still holds `words` words. A best sentence longer than `words` words
      keeps its first `words`.
    The text between the window's first and last words is returned as it stands in the context.
    """
    if words < 1:
        raise ParameterError("words", "must be at least 1, got {words}", words=words)
    spans = [match.span() for match in _WORD.finditer(context)]
    if len(spans) <= words:
        return context
    tokens = [context[start:end] for start, end in spans]
    starts = [0] + [i + 1 for i, token in enumerate(tokens[:-1]) if _SENTENCE_END.search(token)]
    ends = starts[1:] + [len(tokens)]
    asked = content_words(question)
    scores = [len(asked & content_words(" ".join(tokens[s:e]))) for s, e in zip(starts, ends)]
    best = scores.index(max(scores))
    first = starts[best - 1] if best > 0 and ends[best] - starts[best - 1] <= words else starts[best]
    first = min(first, len(tokens) - words)
    last = first + words
    return context[spans[first][0] : spans[last - 1][1]]


def read_qa(path: str | os.PathLike, context_words: int) -> list[Row]:
    """A QA file's rows: `.json` is SQuAD JSON (`read_squad`), `.jsonl` is MRQA (`read_mrqa`)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return read_squad(path, context_words)
    if suffix == ".jsonl":
        return read_mrqa(path, context_words)
    raise SoftpromptError(f"{path}: unknown QA file type {suffix!r} (use .json for SQuAD, .jsonl for MRQA)")


def read_squad(path: str | os.PathLike, context_words: int) -> list[Row]:
    """One row a question of a SQuAD-format JSON file (v1.1, SQuAD-shifts), in file order."""
    _check_words(context_words)
    data = _parse(_read_text(path), str(path))
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list):
        raise SoftpromptError(f'{path}: no "data" list of articles (not SQuAD JSON)')
    rows = []
    for a, article in enumerate(articles, 1):
        where = f"{path} article {a}"
        paragraphs = _field(article, "paragraphs", list, where)
        title = _field(article, "title", str, where)
        for p, paragraph in enumerate(paragraphs, 1):
            here = f"{where} paragraph {p}"
            context = _field(paragraph, "context", str, here)
            for q, qa in enumerate(_field(paragraph, "qas", list, here), 1):
                at = f"{here} question {q}"
                texts = [_field(item, "text", str, f"{at} answer {n}") for n, item in enumerate(_answers(qa, at), 1)]
                rows.append(_row(qa, "id", title, context, texts, context_words, at))
    if not rows:
        raise SoftpromptError(f"{path}: no questions")
    return rows


def read_mrqa(path: str | os.PathLike, context_words: int) -> list[Row]:
    """One row a question of an MRQA jsonl file (a context and its questions a line, after a header line)."""
    _check_words(context_words)
    rows = []
    for number, line in enumerate(_read_text(path).split("\n"), 1):  # not splitlines: strings may hold U+2028
        if not line.strip():
            continue
        where = f"{path} line {number}"
        record = _parse(line, where)
        if number == 1 and isinstance(record, dict) and "header" in record:
            continue
        context = _field(record, "context", str, where)
        for q, qa in enumerate(_field(record, "qas", list, where), 1):
            answers = _answers(qa, f"{where} question {q}")
            if not all(isinstance(answer, str) for answer in answers):
                raise SoftpromptError(f"{where} question {q}: answers must be strings")
            rows.append(_row(qa, "qid", "", context, answers, context_words, f"{where} question {q}"))
    if not rows:
        raise SoftpromptError(f"{path}: no questions")
    return rows


def from_hub(records: list[Row], context_words: int, source: str) -> list[Row]:
    """Rows of a SQuAD-style hub dataset (`datasets` gives answers as {"text": [...], ...}, MRQA's as a list,
    each JSON text in our rows) as the rows the files give, windowed alike."""
    _check_words(context_words)
    rows = []
    for number, record in enumerate(records, 1):
        where = f"{source} row {number}"
        answers = _parse(record.get("answers", "null"), where)
        answers = answers.get("text") if isinstance(answers, dict) else answers
        qa = {**record, "answers": answers}
        texts = _answers(qa, where)
        title = record.get("title", "")
        rows.append(_row(qa, "id" if "id" in record else "qid", title, record.get("context", ""), texts,
                         context_words, where))  # fmt: skip
    return rows


def _parse(text: str, where: str) -> object:
    """`text` as JSON, else a one-line error at `where` (with the line and column where `text` has lines)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno} column {exc.colno}" if "\n" in text else f"column {exc.colno}"
        raise SoftpromptError(f"{where}: not JSON ({exc.msg} at {at})") from None
    except (ValueError, RecursionError):  # huge integers, very deep nesting
        raise SoftpromptError(f"{where}: not JSON we can read (too large or too deep)") from None


def _row(qa: dict, id_key: str, title: str, context: str, answers: list[str], words: int, where: str) -> Row:
    """The row of one question: its answers as a JSON list, the first as the target, the context windowed."""
    question = _field(qa, "question", str, where)
    cut = window(context, question, words)
    return {
        "id": _field(qa, id_key, str, where),
        "title": title,
        "context": cut,
        "question": question,
        "answers": json.dumps(answers),
        "answer": answers[0],
        "answer_in_context": "true" if any(answer in cut for answer in answers) else "false",
    }


def _answers(qa: object, where: str) -> list:
    answers = _field(qa, "answers", list, where)
    if not answers:
        raise SoftpromptError(f"{where}: no answers")
    return answers


def _field(record: object, key: str, kind: type, where: str):
    """`record[key]`, which must be of type `kind`; else a one-line error at `where`."""
    if not isinstance(record, dict):
        raise SoftpromptError(f"{where}: expected a JSON object")
    value = record.get(key)
    if not isinstance(value, kind):
        wanted = {str: "a string", list: "a list"}[kind]
        raise SoftpromptError(f"{where}: {key!r} must be {wanted}" + ("" if key in record else " (missing)"))
    return value


def _check_words(context_words: int) -> None:
    if isinstance(context_words, bool) or not isinstance(context_words, int) or context_words < 1:
        raise ParameterError("context_words", "must be a whole number of words, at least 1, got {value!r}",
                             value=context_words)  # fmt: skip


def _read_text(path: str | os.PathLike) -> str:
    """The file's text, read as UTF-8 (a leading byte-order mark dropped)."""
    file = Path(path)
    if not file.is_file():
        raise SoftpromptError(f"{path}: no such file")
    data = file.read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SoftpromptError(f"{path}: not UTF-8 text (bad byte at offset {exc.start}, line {line})") from None
