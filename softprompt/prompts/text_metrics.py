"""Metrics for generated text scored against one or more reference texts: a text-to-text task has no label
to match, so a prediction counts by how close it comes to the nearest of its references.

Exact match and token F1 follow SQuAD v1.1's official rules (the numbers papers report), written here
rather than copied; ROUGE and BLEU come from the maintained `rouge-score` and `sacrebleu` packages, so our
numbers are theirs. Every score is on a 0-1 scale, like the classification metrics (BLEU is sacrebleu's
score / 100). A row's score is its best over its references; a corpus's is the mean over rows, except BLEU,
which is corpus BLEU (not the mean of sentence BLEU: BLEU is meant to be counted over the whole corpus).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import cache

import sacrebleu
from rouge_score import rouge_scorer

from ..utils.errors import ParameterError

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lower case, no punctuation, no articles (a, an, the as whole words), then
    single spaces. Punctuation goes before articles, as in the official script: "the-end" becomes "theend"."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _check_references(references: Sequence[str], param: str = "references") -> None:
    if isinstance(references, str) or not references:
        raise ParameterError(param, "must be a non-empty list of reference texts, got {value!r}", value=references)


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals some normalised reference, else 0.0."""
    _check_references(references)
    answer = normalize_answer(prediction)
    return float(any(answer == normalize_answer(r) for r in references))


def _f1(prediction_tokens: list[str], reference_tokens: list[str]) -> float:
    # v1.1: no common token scores 0, even when both are empty (v2.0 would give 1 there).
    same = sum((Counter(prediction_tokens) & Counter(reference_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction_tokens), same / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: Sequence[str]) -> float:
    """SQuAD v1.1's F1 over normalised tokens (a token counts as often as both sides have it), best reference."""
    _check_references(references)
    tokens = normalize_answer(prediction).split()
    return max(_f1(tokens, normalize_answer(r).split()) for r in references)


@cache
def _scorer() -> rouge_scorer.RougeScorer:
    """Built once: its Porter stemmer is not free to make. The default tokenizer needs no NLTK data."""
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(prediction: str, references: Sequence[str]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures, each the best over the references (they may come from different
    ones). rouge-score keeps only the tokens [a-z0-9]+ after lower-casing, so text in other scripts scores 0."""
    _check_references(references)
    scores = _scorer().score_multi(list(references), prediction)
    return {name: scores[name].fmeasure for name in ROUGE_TYPES}


def sentence_bleu(prediction: str, references: Sequence[str]) -> float:
    """sacrebleu's sentence BLEU (exp smoothing, effective order) against all the references, on 0-1."""
    _check_references(references)
    return sacrebleu.sentence_bleu(prediction, list(references)).score / 100


def corpus_bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """sacrebleu's corpus BLEU on 0-1, each prediction against all its references, however many a row has.

    sacrebleu takes reference streams (the i-th reference of every row) and drops a None from a row's
    references, so shorter rows are padded with None. Not with "": sacrebleu 2.0 dropped "" too, but later
    versions keep it as a reference of length 0, which can be the closest length and lift the brevity penalty.
    """
    _check_rows(predictions, references)
    width = max(len(refs) for refs in references)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]
    return sacrebleu.corpus_bleu(list(predictions), streams).score / 100


def _check_rows(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """Refuse what would otherwise score silently wrong: a length mismatch (sacrebleu stops at the shorter),
    a row without references, and an empty reference (BLEU and ROUGE have nothing to count in it)."""
    if isinstance(predictions, str) or not predictions:
        raise ParameterError("predictions", "must be a non-empty list of texts")
    if len(predictions) != len(references):
        raise ParameterError("references", "has {r} rows for {p} {predictions}", r=len(references),
                             p=len(predictions))  # fmt: skip
    for row, refs in enumerate(references):
        _check_references(refs, f"references[{row}]")
        if any(not r.strip() for r in refs):
            raise ParameterError(f"references[{row}]", "holds an empty reference: {refs!r}", refs=refs)


def _overlap(prediction: str, references: Sequence[str]) -> dict[str, float]:
    return {"exact_match": exact_match(prediction, references), "f1": token_f1(prediction, references),
            **rouge(prediction, references)}  # fmt: skip


def row_metrics(prediction: str, references: Sequence[str]) -> dict[str, float]:
    """One row's exact_match, f1, rouge1, rouge2, rougeL and (sentence) bleu, for per-row prediction files."""
    _check_rows([prediction], [references])
    return {**_overlap(prediction, references), "bleu": sentence_bleu(prediction, references)}


def text_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """n, and the means over rows of exact_match, f1, rouge1, rouge2 and rougeL, and corpus bleu.
    `references[i]` holds the reference texts of `predictions[i]`, one or more."""
    _check_rows(predictions, references)
    rows = [_overlap(p, refs) for p, refs in zip(predictions, references)]
    result: dict[str, float] = {"n": len(rows)}
    result.update({name: sum(row[name] for row in rows) / len(rows) for name in rows[0]})
    result["bleu"] = corpus_bleu(predictions, references)
    return result
