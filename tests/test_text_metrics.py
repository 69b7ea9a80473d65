"""Generation metrics: SQuAD v1.1's exact match and F1 on cases worked out by hand from the official rules, and
ROUGE and BLEU checked against the libraries called directly and against values computed by hand."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from softprompt.prompts import text_metrics as tm
from softprompt.prompts.text_metrics import (
    corpus_bleu,
    exact_match,
    normalize_answer,
    rouge,
    row_metrics,
    sentence_bleu,
    text_metrics,
    token_f1,
)
from softprompt.utils.errors import ParameterError

SENTENCE = "the quick brown fox jumps over the lazy dog"


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("Paris", "paris"),
        ("Hello, World!", "hello world"),
        ("The Eiffel Tower", "eiffel tower"),
        ("an apple and a banana", "apple and banana"),
        ("theater another banana", "theater another banana"),
        ("  spaces\tand\n\nnewlines  ", "spaces and newlines"),
        ("the-end", "theend"),
        ("A.M. (the) _x_", "am x"),
        ("The. An, a!", ""),
    ],
)
def test_normalisation_lowers_case_drops_punctuation_and_articles_and_collapses_spaces(text, normalised):
    assert normalize_answer(text) == normalised


def test_exact_match_compares_normalised_texts():
    assert exact_match("The Eiffel Tower.", ["eiffel tower"]) == 1.0
    assert exact_match("Eiffel Towers", ["eiffel tower"]) == 0.0


def test_exact_match_takes_the_best_reference():
    assert exact_match("Paris", ["London", "paris.", "Rome"]) == 1.0
    assert exact_match("Paris", ["London", "Rome"]) == 0.0


def test_partial_overlap_f1_is_the_harmonic_mean_of_token_precision_and_recall():
    # [cat, sat, down] against [cat, sat, on, mat]: precision 2/3, recall 2/4, F1 4/7.
    assert token_f1("The cat sat down", ["a cat sat on the mat"]) == pytest.approx(4 / 7)


def test_f1_takes_the_best_reference_not_the_mean():
    # Against "cat": precision 1/3, recall 1, F1 1/2; against the other 4/7; the mean would be 15/28.
    assert token_f1("cat sat down", ["cat", "cat sat on mat"]) == pytest.approx(4 / 7)
    assert token_f1("cat sat down", ["cat sat on mat", "cat"]) == pytest.approx(4 / 7)


def test_a_repeated_token_counts_only_as_often_as_both_sides_have_it():
    # "cat" x3 against one "cat": 1 common token, precision 1/3, recall 1, F1 1/2.
    assert token_f1("cat cat cat", ["cat"]) == pytest.approx(1 / 2)
    # [cat, dog] against [cat, cat, dog, dog]: 2 common, precision 1, recall 1/2, F1 2/3.
    assert token_f1("cat dog", ["cat cat dog dog"]) == pytest.approx(2 / 3)


def test_an_empty_prediction_scores_zero():
    assert exact_match("", ["cat"]) == 0.0
    assert token_f1("", ["cat"]) == 0.0
    assert token_f1("cat", [""]) == 0.0


def test_texts_that_both_normalise_to_nothing_match_exactly_but_have_f1_zero_as_in_v1_1():
    assert exact_match("The.", ["a"]) == 1.0
    assert token_f1("The.", ["a"]) == 0.0
    assert token_f1("", [""]) == 0.0


@pytest.mark.parametrize("references", [[], "cat"])
def test_references_must_be_a_non_empty_list(references):
    for score in (exact_match, token_f1, rouge, sentence_bleu):
        with pytest.raises(ParameterError, match="references"):
            score("cat", references)


def test_a_corpus_scores_exact_match_and_f1_as_means_over_rows():
    result = text_metrics(["cat", "dog sat", "the end"], [["Cat."], ["dog"], ["nothing"]])
    # EM 1, 0, 0; F1 1, 2/3 (precision 1/2, recall 1), 0.
    assert result["n"] == 3
    assert result["exact_match"] == pytest.approx(1 / 3)
    assert result["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_identical_text_scores_one_on_rouge_and_bleu():
    assert rouge(SENTENCE, [SENTENCE]) == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    assert sentence_bleu(SENTENCE, [SENTENCE]) == pytest.approx(1.0)
    assert corpus_bleu([SENTENCE, "a b c d e"], [[SENTENCE], ["a b c d e"]]) == pytest.approx(1.0)


def test_rouge_and_bleu_take_the_best_reference():
    other = "nothing in common here at all"
    assert rouge(SENTENCE, [other]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert rouge(SENTENCE, [other, SENTENCE]) == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    assert sentence_bleu(SENTENCE, [other]) < 0.1
    assert sentence_bleu(SENTENCE, [other, SENTENCE]) == pytest.approx(1.0)


def test_rouge_stems_and_matches_the_library():
    # Stemmed: [the, cat, were, run] against [the, cat, run, fast]: 3 common unigrams, 1 common bigram
    # (the cat), a common subsequence of 3.
    prediction, reference = "the cats were running", "the cat runs fast"
    assert rouge(prediction, [reference]) == pytest.approx({"rouge1": 3 / 4, "rouge2": 1 / 3, "rougeL": 3 / 4})
    direct = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(reference, prediction)
    assert rouge(prediction, [reference]) == {name: score.fmeasure for name, score in direct.items()}


def test_bleu_matches_sacrebleu_and_a_brevity_penalty_worked_out_by_hand():
    # Every n-gram of "the cat" matches; brevity penalty exp(1 - 6/2).
    assert sentence_bleu("the cat", ["the cat sat on the mat"]) == pytest.approx(math.exp(-2))
    hypotheses, references = ["the cat is on the mat", "a dog barks loudly"], ["the cat sat on the mat", "a dog barks"]
    assert corpus_bleu(hypotheses, [[r] for r in references]) == pytest.approx(
        sacrebleu.corpus_bleu(hypotheses, [references]).score / 100
    )
    assert sentence_bleu(hypotheses[0], [references[0]]) == pytest.approx(
        sacrebleu.sentence_bleu(hypotheses[0], [references[0]]).score / 100
    )


def test_corpus_bleu_counts_a_missing_reference_as_missing_not_as_an_empty_one():
    hypotheses = ["the cat", "a b c d"]
    references = [["the cat sat on the mat"], ["a b c d", "a b c e"]]
    # Every n-gram matches; the reference lengths closest to 2 and 4 are 6 and 4: brevity penalty exp(1 - 10/6).
    assert corpus_bleu(hypotheses, references) == pytest.approx(math.exp(-2 / 3))
    # Padding with a copy of the row's own reference changes nothing; padding with "" would (length 0 is closer).
    copied = [["the cat sat on the mat", "a b c d"], ["the cat sat on the mat", "a b c e"]]
    assert corpus_bleu(hypotheses, references) == pytest.approx(sacrebleu.corpus_bleu(hypotheses, copied).score / 100)
    empty = [["the cat sat on the mat", "a b c d"], ["", "a b c e"]]
    assert sacrebleu.corpus_bleu(hypotheses, empty).score / 100 != pytest.approx(math.exp(-2 / 3))


def test_text_metrics_scores_rows_with_different_numbers_of_references():
    predictions = ["the cat sat on the mat", "paris", "a dog barks"]
    references = [
        ["the cat sat on the mat"],
        ["London", "Paris", "Rome"],
        ["the dog barks", "a dog is barking", "x", "y"],
    ]
    result = text_metrics(predictions, references)
    assert set(result) == {"n", "exact_match", "f1", "rouge1", "rouge2", "rougeL", "bleu"}
    rows = [row_metrics(p, refs) for p, refs in zip(predictions, references)]
    for name in ("exact_match", "f1", "rouge1", "rouge2", "rougeL"):
        assert result[name] == pytest.approx(sum(row[name] for row in rows) / 3)
    assert result["exact_match"] == pytest.approx(1.0)  # "a dog barks" and "the dog barks" differ by an article
    assert result["bleu"] == pytest.approx(corpus_bleu(predictions, references))
    # ROUGE-2: 1; 0 (one word has no bigram); 1/2 ("dog bark" of the two bigrams against "the dog barks").
    assert result["rouge2"] == pytest.approx(1 / 2)


def test_row_metrics_of_an_empty_prediction_are_all_zero():
    assert row_metrics("", ["the cat sat"]) == {
        "exact_match": 0.0, "f1": 0.0, "rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "bleu": 0.0,
    }  # fmt: skip


def test_a_corpus_is_refused_when_rows_do_not_line_up_or_a_reference_is_empty():
    with pytest.raises(ParameterError, match="references: has 1 rows for 2 predictions"):
        text_metrics(["a", "b"], [["a"]])
    with pytest.raises(ParameterError, match="predictions"):
        text_metrics([], [])
    with pytest.raises(ParameterError, match=r"references\[1\]"):
        text_metrics(["a", "b"], [["a"], []])
    with pytest.raises(ParameterError, match=r"references\[0\]: holds an empty reference"):
        row_metrics("a", ["a", " "])


def test_the_rouge_scorer_is_built_once_for_a_corpus(monkeypatch):
    built = []

    def counting(*args, **kwargs):
        built.append(args)
        return real(*args, **kwargs)

    real = rouge_scorer.RougeScorer
    tm._scorer.cache_clear()
    monkeypatch.setattr(rouge_scorer, "RougeScorer", counting)
    text_metrics(["a b", "c d", "e f"], [["a b"], ["c"], ["f"]])
    text_metrics(["a b"], [["a b"]])
    assert len(built) == 1
    tm._scorer.cache_clear()


def test_scoring_needs_no_nltk_data(tmp_path):
    """The default tokenizer and the Porter stemmer work with no NLTK data anywhere (nothing is downloaded)."""
    code = "from softprompt.prompts.text_metrics import row_metrics; print(row_metrics('cats run', ['cat runs']))"
    env = {**os.environ, "NLTK_DATA": str(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "'rouge1': 1.0" in done.stdout
