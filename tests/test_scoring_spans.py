"""Entity spans, BIO decoding and strict/lenient NER scores, by hand and against nervaluate and seqeval."""

from __future__ import annotations

import json
import random

import pytest
from nervaluate import Evaluator
from seqeval.metrics import f1_score, precision_score, recall_score

from fedmedlora.scoring.matching import match_one_to_one
from fedmedlora.scoring.spans import Span, bio_to_spans, score_spans, spans_to_bio
from fedmedlora.data.conll import read_conll
from fedmedlora_data import data_path


D, C = "Disease", "Chemical"


# --- Span and BIO ------------------------------------------------------------------------------------------------


def test_bio_to_spans_reads_entities_with_exclusive_ends():
    tags = ["B-Disease", "I-Disease", "O", "B-Chemical", "B-Chemical", "I-Chemical", "O", "B-Disease"]
    assert bio_to_spans(tags) == [Span(0, 2, D), Span(3, 4, C), Span(4, 6, C), Span(7, 8, D)]


def test_i_without_b_starts_a_span_as_conlleval_does():
    assert bio_to_spans(["O", "I-Disease", "I-Disease", "O"]) == [Span(1, 3, D)]
    assert bio_to_spans(["I-Disease"]) == [Span(0, 1, D)]
    # An I- of another type does not continue the current span.
    assert bio_to_spans(["B-Disease", "I-Chemical", "I-Chemical"]) == [Span(0, 1, D), Span(1, 3, C)]


def test_all_outside_and_empty_sequences_have_no_spans():
    assert bio_to_spans(["O", "O"]) == []
    assert bio_to_spans([]) == []


@pytest.mark.parametrize("bad", [["B-"], ["X-Disease"], ["Disease"], ["o"], [None]])
def test_bio_to_spans_rejects_tags_that_are_not_bio(bad):
    with pytest.raises(ValueError, match="not BIO|not a string"):
        bio_to_spans(bad)


def test_spans_to_bio_inverts_bio_to_spans():
    tags = ["B-Disease", "I-Disease", "O", "B-Chemical", "B-Chemical", "O"]
    assert spans_to_bio(bio_to_spans(tags), len(tags)) == tags


def test_spans_to_bio_refuses_what_bio_cannot_encode():
    with pytest.raises(ValueError, match="overlap"):
        spans_to_bio([Span(0, 2, D), Span(1, 3, C)], 4)
    with pytest.raises(ValueError, match="past"):
        spans_to_bio([Span(2, 5, D)], 4)


@pytest.mark.parametrize("start,end,entity_type", [(2, 2, D), (3, 1, D), (-1, 1, D), (0, 1, "")])
def test_span_rejects_empty_or_negative_ranges_and_empty_types(start, end, entity_type):
    with pytest.raises(ValueError):
        Span(start, end, entity_type)


def test_span_overlap_counts_shared_tokens():
    assert Span(0, 3, D).overlap(Span(2, 5, D)) == 1
    assert Span(0, 3, D).overlap(Span(3, 5, D)) == 0


# --- hand-made scoring cases -------------------------------------------------------------------------------------


def test_exact_match_scores_one_everywhere():
    gold = [[Span(0, 2, D), Span(4, 5, C)]]
    flat = score_spans(gold, [list(gold[0])]).flat()
    for key in (
        "strict-f1",
        "lenient-f1",
        "typed-strict-micro-f1",
        "typed-strict-macro-f1",
        "typed-lenient-micro-f1",
        "typed-lenient-macro-f1",
        "Disease/strict-f1",
        "Chemical/lenient-f1",
    ):
        assert flat[key] == 1.0, key
    assert (flat["strict-tp"], flat["strict-fp"], flat["strict-fn"]) == (2, 0, 0)


def test_partial_overlap_is_a_lenient_hit_and_a_strict_miss():
    scores = score_spans([[Span(3, 6, D)]], [[Span(4, 7, D)]])
    assert (scores.strict.tp, scores.strict.fp, scores.strict.fn) == (0, 1, 1)
    assert (scores.lenient.tp, scores.lenient.fp, scores.lenient.fn) == (1, 0, 0)
    assert scores.flat()["strict-f1"] == 0.0
    assert scores.flat()["lenient-f1"] == 1.0


def test_type_mismatch_counts_in_the_headline_but_not_in_typed_scores():
    scores = score_spans([[Span(0, 2, D)]], [[Span(0, 2, C)]])
    flat = scores.flat()
    assert flat["strict-f1"] == 1.0 and flat["lenient-f1"] == 1.0
    assert flat["typed-strict-micro-f1"] == 0.0 and flat["typed-lenient-micro-f1"] == 0.0
    # Gold Disease is missed and predicted Chemical is spurious, each type with F1 0.
    assert scores.by_type("strict")[D].fn == 1 and scores.by_type("strict")[C].fp == 1
    assert flat["typed-strict-macro-f1"] == 0.0


def test_one_prediction_over_two_gold_spans_matches_only_one_of_them():
    gold = [Span(0, 2, D), Span(3, 4, D)]
    pred = [Span(0, 4, D)]
    scores = score_spans([gold], [pred])
    assert (scores.lenient.tp, scores.lenient.fp, scores.lenient.fn) == (1, 0, 1)
    # It takes the gold span it overlaps most (2 tokens against 1).
    assert match_one_to_one(gold, pred, key=lambda s: (s.start, s.end), overlap=Span.overlap).pairs == [(0, 0)]


def test_two_predictions_over_one_gold_span_give_one_hit_and_one_false_positive():
    scores = score_spans([[Span(0, 4, D)]], [[Span(0, 1, D), Span(2, 4, D)]])
    assert (scores.lenient.tp, scores.lenient.fp, scores.lenient.fn) == (1, 1, 0)
    assert (scores.strict.tp, scores.strict.fp, scores.strict.fn) == (0, 2, 1)


def test_a_prediction_between_two_gold_spans_matches_one_of_them():
    gold = [Span(0, 2, D), Span(2, 4, D)]
    matching = match_one_to_one(gold, [Span(1, 3, D)], key=lambda s: (s.start, s.end), overlap=Span.overlap)
    assert len(matching.pairs) == 1 and matching.pairs[0][1] == 0


def test_exact_matches_pair_off_before_overlaps_so_lenient_is_never_below_strict():
    # Text order would let the long prediction take gold [0, 2) first and leave the exact prediction unmatched.
    gold = [Span(0, 2, D), Span(2, 4, D)]
    pred = [Span(0, 4, D), Span(0, 2, D)]
    scores = score_spans([gold], [pred])
    assert scores.strict.tp == 1
    assert (scores.lenient.tp, scores.lenient.fp, scores.lenient.fn) == (2, 0, 0)


def test_result_does_not_depend_on_the_order_spans_are_listed_in():
    gold = [Span(0, 2, D), Span(2, 4, D), Span(6, 7, C)]
    pred = [Span(1, 3, D), Span(3, 6, D), Span(6, 7, D)]
    forward = score_spans([gold], [pred]).to_dict()
    assert score_spans([gold[::-1]], [pred[::-1]]).to_dict() == forward


def test_empty_gold_and_or_prediction_use_zero_for_undefined_ratios():
    nothing = score_spans([[], []], [[], []])
    assert nothing.flat()["strict-f1"] == 0.0 and nothing.flat()["typed-strict-macro-f1"] == 0.0
    assert nothing.types == []

    only_predictions = score_spans([[]], [[Span(0, 1, D)]])
    assert (only_predictions.strict.fp, only_predictions.strict.precision, only_predictions.strict.recall) == (
        1,
        0.0,
        0.0,
    )

    only_gold = score_spans([[Span(0, 1, D)]], [[]])
    assert (only_gold.lenient.fn, only_gold.lenient.f1) == (1, 0.0)


def test_typed_macro_averages_every_type_seen_in_gold_or_prediction():
    gold = [[Span(0, 1, D), Span(2, 3, D)], [Span(0, 1, C)]]
    pred = [[Span(0, 1, D), Span(2, 3, D)], [Span(0, 1, "Gene")]]
    scores = score_spans(gold, pred)
    assert scores.types == ["Chemical", "Disease", "Gene"]
    flat = scores.flat()
    assert flat["Disease/strict-f1"] == 1.0
    assert flat["typed-strict-macro-f1"] == pytest.approx(1 / 3)
    assert flat["typed-strict-micro-f1"] == pytest.approx(2 / 3)
    assert flat["strict-f1"] == 1.0  # types collapsed
    assert flat["Chemical/support"] == 1 and flat["Gene/support"] == 0


def test_outputs_are_json_able_and_the_table_has_a_row_per_type():
    scores = score_spans([[Span(0, 2, D)], [Span(1, 2, C)]], [[Span(0, 1, D)], []])
    flat = scores.flat()
    for key in (
        "strict-f1", "strict-precision", "strict-recall", "lenient-f1", "lenient-precision", "lenient-recall",
        "typed-strict-micro-f1", "typed-strict-macro-f1", "typed-lenient-micro-f1", "typed-lenient-macro-f1",
        "strict-tp", "lenient-fn", "Disease/strict-f1", "Disease/lenient-f1", "Chemical/support",
    ):  # fmt: skip
        assert isinstance(flat[key], (int, float)), key
    nested = json.loads(json.dumps(scores.to_dict()))
    assert nested["per-type"]["Disease"]["lenient"]["tp"] == 1
    assert nested["headline"]["strict"]["support"] == 2
    table = scores.table()
    assert table.splitlines()[0].startswith("| entity type |")
    assert any(line.startswith("| Disease | 1 | 1 |") for line in table.splitlines())
    assert "| all types collapsed |" in table


def test_gold_and_prediction_must_have_the_same_number_of_documents():
    with pytest.raises(ValueError, match="documents"):
        score_spans([[Span(0, 1, D)]], [[], []])
    with pytest.raises(TypeError, match="Span"):
        score_spans([[(0, 1, D)]], [[]])


# --- cross-check against nervaluate and seqeval on real sentences ------------------------------------------------


def corrupt(tags: list[str], rng: random.Random) -> list[str]:
    """Predicted tags: gold entities dropped, boundaries shifted, types flipped, spurious ones added, and some
    predictions written with a leading I- instead of B-."""
    length = len(tags)
    predicted: list[Span] = []
    for span in bio_to_spans(tags):
        roll = rng.random()
        if roll < 0.12:
            continue
        start, end, entity_type = span.start, span.end, span.type
        if roll < 0.27:
            start, end = max(0, start + rng.choice([-1, 1])), min(length, end + rng.choice([-1, 1]))
        elif roll < 0.37:
            entity_type = C if entity_type == D else D
        if end > start and not any(Span(start, end, D).overlap(other) for other in predicted):
            predicted.append(Span(start, end, entity_type))
    for _ in range(rng.choice([0, 0, 0, 1])):
        position = rng.randrange(length)
        spurious = Span(position, min(length, position + rng.choice([1, 2])), rng.choice([C, D]))
        if not any(spurious.overlap(other) for other in predicted):
            predicted.append(spurious)
    predicted_tags = spans_to_bio(predicted, length)
    for span in predicted:
        before = predicted_tags[span.start - 1] if span.start else "O"
        if before == "O" and rng.random() < 0.2:
            predicted_tags[span.start] = "I-" + span.type
    return predicted_tags


@pytest.fixture(scope="module")
def bc5cdr_gold_and_corrupted():
    sentences = read_conll(data_path("ner", "bc5cdr", "test.tsv.gz"))[:300]
    rng = random.Random(20240601)
    gold_tags = [tags for _, tags in sentences]
    pred_tags = [corrupt(tags, rng) for tags in gold_tags]
    return gold_tags, pred_tags


def test_corruption_makes_every_kind_of_error(bc5cdr_gold_and_corrupted):
    gold_tags, pred_tags = bc5cdr_gold_and_corrupted
    scores = score_spans([bio_to_spans(t) for t in gold_tags], [bio_to_spans(t) for t in pred_tags])
    assert scores.strict.tp > 400 and scores.strict.fp > 30 and scores.strict.fn > 80
    assert scores.lenient.tp > scores.strict.tp  # shifted boundaries
    assert scores.strict.tp > scores.typed_micro("strict").tp  # flipped types
    assert any(before == "O" and tag.startswith("I-") for t in pred_tags for before, tag in zip(["O"] + t, t))


def test_typed_strict_micro_equals_seqeval_and_nervaluate(bc5cdr_gold_and_corrupted):
    gold_tags, pred_tags = bc5cdr_gold_and_corrupted
    scores = score_spans([bio_to_spans(t) for t in gold_tags], [bio_to_spans(t) for t in pred_tags])
    typed = scores.typed_micro("strict")

    assert typed.precision == pytest.approx(precision_score(gold_tags, pred_tags), abs=1e-12)
    assert typed.recall == pytest.approx(recall_score(gold_tags, pred_tags), abs=1e-12)
    assert typed.f1 == pytest.approx(f1_score(gold_tags, pred_tags), abs=1e-12)

    results = Evaluator(gold_tags, pred_tags, tags=[C, D], loader="list").evaluate()
    strict = results["overall"]["strict"]
    assert (typed.tp, typed.predicted, typed.support) == (strict.correct, strict.actual, strict.possible)
    assert (typed.precision, typed.recall) == pytest.approx((strict.precision, strict.recall), abs=1e-12)
    assert typed.f1 == pytest.approx(strict.f1, abs=1e-12)
    for entity_type in (C, D):
        per_type = results["entities"][entity_type]["strict"]
        assert scores.by_type("strict")[entity_type].f1 == pytest.approx(per_type.f1, abs=1e-12)

    # nervaluate's "exact" schema ignores types, like the seed's headline.
    exact = results["overall"]["exact"]
    assert (scores.strict.tp, scores.strict.predicted, scores.strict.support) == (
        exact.correct,
        exact.actual,
        exact.possible,
    )
    assert scores.strict.f1 == pytest.approx(exact.f1, abs=1e-12)
