"""Scores are mergeable from counts: the sum of the sites' count records scores exactly as the pooled predictions.

This is what federated evaluation rests on (each site sends counts, the server merges them), so the comparison is
with the server scoring the pooled outcome directly, for every task family, to the last bit.
"""

from __future__ import annotations

import random

import pytest
from flwr.app import MetricRecord

from fedmedlora.scoring import Relation, Span, score_relations, score_spans
from fedmedlora.tasks.base import merge_outcomes
from fedmedlora.tasks.generative_ner import GenerativeNerOutcome, GenerativeNERTask
from fedmedlora.tasks.generative_re import GenerativeRelationOutcome, GenerativeRETask
from fedmedlora.tasks.instruct_sft import InstructSFTTask, LossOutcome
from fedmedlora.tasks.relation_classification import RelationClassificationTask, RelationOutcome
from fedmedlora.tasks.token_classification import NerOutcome, TokenClassificationTask

TYPES = ["Chemical", "Disease", "Gene/Protein"]  # a "/" in a type name must survive the flat keys


def _spans(rng: random.Random) -> list[Span]:
    spans, start = [], 0
    while start < 20 and rng.random() < 0.7:
        start += rng.randint(0, 3)
        end = start + rng.randint(1, 3)
        spans.append(Span(start, end, rng.choice(TYPES)))
        start = end + rng.randint(0, 2)
    return spans


def _ner_outcomes(cls, sites: int = 3, seed: int = 0) -> list:
    rng = random.Random(seed)
    outcomes = []
    for _ in range(sites):
        docs = rng.randint(0, 12)
        gold = [_spans(rng) for _ in range(docs)]
        pred = [[s for s in g if rng.random() < 0.6] + _spans(rng)[:1] for g in gold]
        outcome = cls(loss_sum=rng.random() * 50, loss_count=rng.randint(0, 300), gold=gold, pred=pred)
        if isinstance(outcome, GenerativeNerOutcome):
            outcome.unparseable, outcome.dropped_lines = rng.randint(0, 3), rng.randint(0, 5)
        outcomes.append(outcome)
    return outcomes


def _relations(rng: random.Random) -> list[Relation]:
    names = ["aspirin", "ibuprofen", "headache", "liver injury", "BRCA1"]
    return [Relation(rng.choice(names), rng.choice(names), rng.choice(["CID", "CPR:3", "CPR:4"]))
            for _ in range(rng.randint(0, 4))]


def _re_outcomes(cls, sites: int = 3, seed: int = 1) -> list:
    rng = random.Random(seed)
    outcomes = []
    for _ in range(sites):
        gold = [_relations(rng) for _ in range(rng.randint(1, 10))]
        pred = [[r for r in g if rng.random() < 0.5] + _relations(rng)[:1] for g in gold]
        outcome = cls(loss_sum=rng.random() * 10, loss_count=rng.randint(1, 90), gold=gold, pred=pred)
        if isinstance(outcome, GenerativeRelationOutcome):
            outcome.unparseable = rng.randint(0, 2)
        outcomes.append(outcome)
    return outcomes


def _old_score(outcome, scorer) -> dict[str, float]:
    """The scoring before count records existed: the whole pooled outcome, scored in one go."""
    metrics = {k: float(v) for k, v in scorer(outcome.gold, outcome.pred).flat().items()}
    metrics["loss"] = outcome.loss
    metrics["examples"] = float(len(outcome.gold))
    return metrics


def _through_the_wire(record: dict) -> dict:
    """A count record as a site sends it (a Flower MetricRecord) and the server reads it back."""
    return dict(MetricRecord(record))


@pytest.mark.parametrize("task, outcomes, scorer", [
    (TokenClassificationTask, _ner_outcomes(NerOutcome), score_spans),
    (GenerativeNERTask, _ner_outcomes(GenerativeNerOutcome), score_spans),
    (RelationClassificationTask, _re_outcomes(RelationOutcome), score_relations),
    (GenerativeRETask, _re_outcomes(GenerativeRelationOutcome), score_relations),
])
def test_merged_site_counts_score_exactly_as_pooled_predictions(task, outcomes, scorer):
    pooled = merge_outcomes(outcomes)
    merged = task.merge_counts([_through_the_wire(task.counts(o)) for o in outcomes])
    from_counts = task.score_counts(merged)
    expected = _old_score(pooled, scorer)
    if hasattr(pooled, "unparseable"):
        expected.update({"unparseable": float(pooled.unparseable), "dropped-lines": float(pooled.dropped_lines)})
    assert from_counts == expected  # exact: same ints, same float sums in the same order
    assert task.score(pooled) == expected
    for outcome in outcomes:  # and each site's own scores from its own record
        assert task.score_counts(task.counts(outcome)) == task.score(outcome)


def test_count_records_carry_numbers_and_label_names_only():
    outcome = _ner_outcomes(GenerativeNerOutcome, sites=1, seed=4)[0]
    outcome.generations = ["Disease: liver injury"]  # generated text stays on the site
    record = GenerativeNERTask.counts(outcome)
    assert all(isinstance(v, (int, float)) for v in record.values())
    for key in record:
        assert key in {"documents", "loss-sum", "loss-count", "unparseable", "dropped-lines"} or \
            key.split("-")[0] in ("strict", "lenient") or key.rsplit("/", 1)[0] in TYPES
    assert not any("liver" in key for key in record)


def test_instruction_loss_merges_from_counts():
    outcomes = [LossOutcome(loss_sum=12.5, loss_count=40, examples=3), LossOutcome(loss_sum=3.25, loss_count=9,
                                                                                     examples=1)]
    merged = InstructSFTTask.merge_counts([InstructSFTTask.counts(o) for o in outcomes])
    pooled = InstructSFTTask.score(merge_outcomes(outcomes))
    assert InstructSFTTask.score_counts(merged) == pooled
    assert pooled["loss"] == pytest.approx(15.75 / 49) and pooled["examples"] == 4 and pooled["tokens"] == 49


def test_an_empty_site_adds_nothing():
    outcomes = _ner_outcomes(NerOutcome, sites=2, seed=9) + [NerOutcome()]
    merged = TokenClassificationTask.merge_counts([TokenClassificationTask.counts(o) for o in outcomes])
    assert TokenClassificationTask.score_counts(merged) == TokenClassificationTask.score(merge_outcomes(outcomes))
