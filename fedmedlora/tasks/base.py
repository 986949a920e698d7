"""The task contract: what every task (NER, RE, instruction tuning; on an encoder or a causal LM) provides.

The registry that picks a class by (data.task, model family) is registry.py. A task turns rows into a tokenized dataset, builds the trainer for one client round, predicts a split into an
outcome (gold and predicted items plus the summed loss), merges outcomes across sites and scores them. Outcomes are
dataclasses whose list fields concatenate and whose numbers add, so one `merge_outcomes` serves every task.

Scores are mergeable from counts: `counts(outcome)` is a flat record of numbers (tp/fp/fn per mode and per agreed
label name, loss sums, examples) whose key-wise sum over sites is the record of the pooled outcome, and
`score_counts(record)` gives the metrics; `score(outcome)` is `score_counts(counts(outcome))`, so the metrics a site's
counts give on the server are the metrics its predictions would give there. This is what lets each site score its
own held-out split and send numbers only (federated evaluation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, TypeVar

from ..scoring.count_record import scores_from_counts, sum_records
from ..scoring.typed_scores import TypedScores
from ..settings import Settings


@dataclasses.dataclass
class Outcome:
    """What predicting one split gives: the summed loss over `loss_count` scored targets (tokens or pairs);
    subclasses add their gold and predicted items."""

    loss_sum: float = 0.0
    loss_count: int = 0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.loss_count, 1)


O = TypeVar("O", bound=Outcome)


def merge_outcomes(outcomes: Sequence[O]) -> O:
    """One outcome of several splits (sites): lists concatenated in order, numbers added."""
    if not outcomes:
        raise ValueError("no outcomes to merge")
    merged = type(outcomes[0])()
    for f in dataclasses.fields(merged):
        values = [getattr(o, f.name) for o in outcomes]
        if any(isinstance(v, list) for v in values):
            setattr(merged, f.name, [item for v in values for item in (v or [])])
        else:
            setattr(merged, f.name, sum(values))
    return merged


class Task(Protocol):
    """What the apps, the strategies and the eval module rely on (see the classes in this package)."""

    family: ClassVar[str]  # "encoder" or "causal"
    head: ClassVar[str]  # the model head it trains: "token", "sequence" (encoders) or "" (a causal LM's own)
    trainer_name: ClassVar[str]
    primary_metric: ClassVar[str]  # the headline of score()
    training_items: ClassVar[str]  # the site statistic that counts the rows tokenize() makes (see TaskBase)
    settings: Settings
    labels: list[str]  # the classes of an encoder's head (empty for a causal LM)

    @staticmethod
    def vocabulary(rows: list[dict[str, Any]]) -> list[str]:
        """What the task predicts, read from the data: entity types, relation labels, or nothing."""

    @staticmethod
    def union_vocabulary(vocabularies: Sequence[Sequence[str]]) -> list[str]:
        """`vocabulary` of several sites' rows together, from each site's `vocabulary` (no rows needed)."""

    def tokenize(self, rows: list[dict[str, Any]], tokenizer: Any) -> Any:
        """A `datasets.Dataset` the trainer and `predict` read (tokenized once per process by the job)."""

    def count_tokens(self, dataset: Any) -> int:
        """Training tokens of a tokenized split (the client weight of token-weighted strategies)."""

    def make_trainer(self, resident: Any, train_dataset: Any, args: Any) -> Any:
        """The trainer (and its collator) for one client round on the resident model."""

    def predict(self, resident: Any, rows: list[dict[str, Any]], dataset: Any, batch_size: int) -> Outcome:
        """Gold, predictions and loss of a split, with whatever adapter the resident model holds."""

    def merge(self, outcomes: Sequence[Outcome]) -> Outcome: ...

    @staticmethod
    def counts(outcome: Outcome) -> dict[str, float]:
        """The outcome as a flat record of numbers (no text) that adds across sites."""

    @staticmethod
    def score_counts(counts: Mapping[str, float]) -> dict[str, float]:
        """Metrics of a count record (one site's, or the sum of several); `primary_metric` among them."""

    @classmethod
    def score(cls, outcome: Outcome) -> dict[str, float]:
        """Metrics of an outcome: `score_counts(counts(outcome))`."""

    def merge_counts(self, records: Sequence[Mapping[str, float]]) -> dict[str, float]: ...

    def validation_loss(self, resident: Any, rows: list[dict[str, Any]], dataset: Any, batch_size: int,
                        completion_only: bool = True) -> tuple[float, int]:
        """(summed loss, scored targets): Fed-MedLoRA+'s server-side score of an adapter."""


class TaskBase:
    """Shared parts: settings, the generic merge, and `vocabulary_from_labels` for checkpoints."""

    family: ClassVar[str]
    head: ClassVar[str]
    trainer_name: ClassVar[str]
    primary_metric: ClassVar[str]
    # the site statistic (data/sites.py, `train-<this>`) that counts the rows `tokenize` makes of a site's training
    # rows: the unit of a reply's `num-examples`, against which strategy.weight-cap caps it
    training_items: ClassVar[str] = "examples"
    labels: list[str]

    def __init__(self, settings: Settings, vocabulary: list[str]):
        self.settings = settings
        self.vocabulary_items = list(vocabulary)

    @staticmethod
    def vocabulary(rows: list[dict[str, Any]]) -> list[str]:
        return []

    @staticmethod
    def vocabulary_from_labels(labels: list[str]) -> list[str]:
        """The vocabulary behind a checkpoint's head labels (fedmedlora.json)."""
        return list(labels)

    @staticmethod
    def union_vocabulary(vocabularies: Sequence[Sequence[str]]) -> list[str]:
        """The vocabulary of several sites' rows from each site's own (sorted, as `vocabulary` gives it)."""
        return sorted({item for vocabulary in vocabularies for item in vocabulary})

    def merge(self, outcomes: Sequence[Outcome]) -> Outcome:
        return merge_outcomes(outcomes)

    @classmethod
    def score(cls, outcome: Outcome) -> dict[str, float]:
        return cls.score_counts(cls.counts(outcome))  # type: ignore[attr-defined]

    @staticmethod
    def merge_counts(records: Sequence[Mapping[str, float]]) -> dict[str, float]:
        """The count record of several splits (sites): key-wise sums, in the order given."""
        return sum_records(records)


def loss_counts(outcome: Outcome) -> dict[str, float]:
    """The loss part of every task's count record."""
    return {"loss-sum": float(outcome.loss_sum), "loss-count": int(outcome.loss_count)}


def loss_of(counts: Mapping[str, float]) -> float:
    """Mean loss of a count record, as `Outcome.loss` computes it."""
    return counts.get("loss-sum", 0.0) / max(int(counts.get("loss-count", 0)), 1)


def metrics_from_counts(scores_cls: type[TypedScores], counts: Mapping[str, float]) -> dict[str, float]:
    """A span or relation task's metrics from its count record: every F1 of the scores, the mean loss, examples."""
    metrics = {k: float(v) for k, v in scores_from_counts(scores_cls, counts).flat().items()}
    metrics["loss"] = loss_of(counts)
    metrics["examples"] = float(counts.get("documents", 0))
    return metrics
