"""Lenient matching is a maximum one-to-one matching: checked by hand on the cases greedy matching gets wrong and
against a brute-force matcher on random documents (spans and relations)."""

from __future__ import annotations

import itertools
import random

import pytest

from fedmedlora.scoring import Relation, Span, bio_to_spans, score_relations, score_spans
from fedmedlora.scoring.matching import match_one_to_one
from fedmedlora.scoring.relations import CONCEPT_RELATIONS, MENTION_RELATIONS
from fedmedlora.scoring.spans import SPAN_KIND

D = "Disease"


def brute_force_lenient(gold, pred, overlap) -> int:
    """The largest number of one-to-one overlapping (gold, pred) pairs, trying every injection of the smaller side
    into the larger (a matching of k pairs extends to one, and its other pairs cannot count more)."""
    best = 0
    for chosen in itertools.permutations(range(len(pred)), len(gold)) if len(gold) <= len(pred) else ():
        best = max(best, sum(overlap(gold[g], pred[p]) > 0 for g, p in enumerate(chosen)))
    for chosen in itertools.permutations(range(len(gold)), len(pred)) if len(gold) > len(pred) else ():
        best = max(best, sum(overlap(gold[g], pred[p]) > 0 for p, g in enumerate(chosen)))
    return best


def test_the_issue_example_keeps_both_matches():
    # gold B B I I: spans [0,1) and [1,4); pred B I I B: spans [0,3) and [3,4). Greedy matching let [0,3) take the
    # gold span it overlaps most ([1,4)), leaving [3,4) nothing: 1 match where 2 are possible.
    gold = bio_to_spans(["B-D", "B-D", "I-D", "I-D"])
    pred = bio_to_spans(["B-D", "I-D", "I-D", "B-D"])
    assert gold == [Span(0, 1, "D"), Span(1, 4, "D")] and pred == [Span(0, 3, "D"), Span(3, 4, "D")]
    scores = score_spans([gold], [pred])
    assert (scores.lenient.tp, scores.lenient.fp, scores.lenient.fn) == (2, 0, 0)
    assert scores.strict.tp == 0
    assert scores.by_type("lenient")["D"].tp == 2  # per type the same rule applies


def test_an_exact_pair_is_broken_only_when_that_gives_more_pairs():
    # gold [2,6) has an exact prediction, but keeping it leaves gold [0,3) and pred [5,8) unmatched (1 pair);
    # [2,6)-[5,8) and [0,3)-[2,6) make 2. Strict still counts the exact pair.
    gold = [Span(0, 3, D), Span(2, 6, D)]
    pred = [Span(2, 6, D), Span(5, 8, D)]
    scores = score_spans([gold], [pred])
    assert (scores.strict.tp, scores.lenient.tp) == (1, 2)
    # With as many pairs either way, the exact pair is kept.
    matching = match_one_to_one([Span(0, 4, D)], [Span(1, 2, D), Span(0, 4, D)], SPAN_KIND.key, SPAN_KIND.overlap)
    assert matching.exact == [(0, 1)] and matching.pairs == [(0, 1)]


def test_relations_use_the_maximum_matching_too():
    # Concept level: pred 0 shares words with both gold relations, pred 1 only with gold 0.
    gold = [Relation("aspirin", "renal failure", "CID"), Relation("aspirin", "acute renal failure", "CID")]
    pred = [Relation("aspirin", "acute renal failure syndrome", "CID"), Relation("aspirin", "renal disease", "CID")]
    assert match_one_to_one(gold, pred, CONCEPT_RELATIONS.key, CONCEPT_RELATIONS.overlap).pairs == [(1, 0), (0, 1)]
    assert score_relations([gold], [pred]).lenient.tp == 2


def random_spans(rng: random.Random, length: int, count: int) -> list[Span]:
    spans = []
    for _ in range(count):
        start = rng.randrange(length)
        spans.append(Span(start, min(length, start + rng.randint(1, 4)), rng.choice([D, "Chemical"])))
    return spans


@pytest.mark.parametrize("seed", range(5))
def test_lenient_counts_equal_a_brute_force_maximum_on_random_spans(seed):
    rng = random.Random(seed)
    for _ in range(300):
        gold = sorted(random_spans(rng, 12, rng.randint(0, 5)))
        pred = sorted(random_spans(rng, 12, rng.randint(0, 5)))
        matching = match_one_to_one(gold, pred, SPAN_KIND.key, SPAN_KIND.overlap)
        assert len(matching.pairs) == brute_force_lenient(gold, pred, Span.overlap), (gold, pred)
        # a valid one-to-one matching of overlapping items, never below strict
        assert len({g for g, _ in matching.pairs}) == len({p for _, p in matching.pairs}) == len(matching.pairs)
        assert all(gold[g].overlap(pred[p]) > 0 for g, p in matching.pairs)
        assert len(matching.pairs) >= len(matching.exact)
        # the corpus scores agree, typed ones included
        scores = score_spans([gold], [pred])
        assert scores.lenient.tp == len(matching.pairs)
        for entity_type in {s.type for s in gold + pred}:
            of_type = [s for s in gold if s.type == entity_type], [s for s in pred if s.type == entity_type]
            assert scores.by_type("lenient")[entity_type].tp == brute_force_lenient(*of_type, Span.overlap)


def test_lenient_counts_equal_a_brute_force_maximum_on_random_mention_relations():
    rng = random.Random(11)
    for _ in range(300):
        def relations(count):
            return [Relation(*random_spans(rng, 10, 2), "CID") for _ in range(count)]

        gold = MENTION_RELATIONS.prepare(relations(rng.randint(0, 4)), False)
        pred = MENTION_RELATIONS.prepare(relations(rng.randint(0, 4)), False)
        matching = match_one_to_one(gold, pred, MENTION_RELATIONS.key, MENTION_RELATIONS.overlap)
        assert len(matching.pairs) == brute_force_lenient(gold, pred, MENTION_RELATIONS.overlap)
