"""NER as token classification on an encoder (BERT family): Transformers Trainer, entity-level F1.

Words are split into subwords; the first subword of each word carries the word's BIO label, the rest are ignored
(-100), and prediction reads the first subword back. Words cut off by `data.max-length` are predicted "O", so
truncation costs recall instead of silently shrinking the gold set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collections.abc import Mapping

from ..scoring.count_record import counts_of
from ..scoring.spans import EntityScores, Span, bio_to_spans, score_spans
from ..settings import ConfigError, Settings
from .base import Outcome, TaskBase, loss_counts, metrics_from_counts

IGNORE = -100


def bio_labels(entity_types: list[str]) -> list[str]:
    return ["O"] + [f"{prefix}-{t}" for t in entity_types for prefix in ("B", "I")]


def entity_types(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({t[2:] for r in rows for t in r["tags"] if t != "O"})


def checked_entity_types(settings: Settings, types: list[str]) -> list[str]:
    if not types:
        raise ConfigError([f"key 'data.datasets' = {settings.data.datasets!r}: no entity found in the data"])
    return types


@dataclass
class NerOutcome(Outcome):
    """Gold and predicted spans of one evaluation split (loss over labelled tokens), mergeable across sites."""

    gold: list[list[Span]] = field(default_factory=list)
    pred: list[list[Span]] = field(default_factory=list)


def ner_counts(outcome: NerOutcome) -> dict[str, float]:
    """Strict/lenient tp/fp/fn overall and per entity type, sentences, and the loss sum: numbers only."""
    return {**counts_of(score_spans(outcome.gold, outcome.pred)), **loss_counts(outcome)}


def score_ner_counts(counts: Mapping[str, float]) -> dict[str, float]:
    return metrics_from_counts(EntityScores, counts)


class TokenClassificationTask(TaskBase):
    family = "encoder"
    head = "token"
    trainer_name = "transformers.Trainer"
    primary_metric = "strict-f1"  # the headline a user reads first

    def __init__(self, settings: Settings, entity_types: list[str]):
        super().__init__(settings, checked_entity_types(settings, entity_types))
        self.entity_types = self.vocabulary_items
        self.labels = bio_labels(self.entity_types)
        self.label_id = {label: i for i, label in enumerate(self.labels)}

    vocabulary = staticmethod(entity_types)

    @staticmethod
    def vocabulary_from_labels(labels: list[str]) -> list[str]:
        return sorted({label[2:] for label in labels if label != "O"})

    def tokenize(self, rows: list[dict[str, Any]], tokenizer: Any) -> Any:
        import datasets

        encoded = tokenizer([r["tokens"] for r in rows], is_split_into_words=True, truncation=True,
                            max_length=self.settings.data.max_length)
        input_ids, attention, labels, first_subword = [], [], [], []
        for i, row in enumerate(rows):
            word_ids = encoded.word_ids(i)
            row_labels, starts, previous = [], [], None
            for position, word in enumerate(word_ids):
                if word is None or word == previous:
                    row_labels.append(IGNORE)
                else:
                    row_labels.append(self.label_id[row["tags"][word]])
                    starts.append(position)
                previous = word
            input_ids.append(encoded["input_ids"][i])
            attention.append(encoded["attention_mask"][i])
            labels.append(row_labels)
            first_subword.append(starts)
        return datasets.Dataset.from_dict({"input_ids": input_ids, "attention_mask": attention, "labels": labels,
                                           "first_subword": first_subword})

    @staticmethod
    def count_tokens(dataset: Any) -> int:
        return int(sum(len(ids) for ids in dataset["input_ids"]))

    def make_trainer(self, resident: Any, train_dataset: Any, args: Any) -> Any:
        from transformers import DataCollatorForTokenClassification, Trainer

        return Trainer(
            model=resident.model,
            args=args,
            train_dataset=train_dataset.remove_columns(["first_subword"]),
            data_collator=DataCollatorForTokenClassification(resident.tokenizer),
            processing_class=resident.tokenizer,
        )

    def predict(self, resident: Any, rows: list[dict[str, Any]], dataset: Any, batch_size: int) -> NerOutcome:
        import torch

        model, tokenizer = resident.model, resident.tokenizer
        device = next(model.parameters()).device
        columns = dataset[:]  # one columnar read: row-wise Dataset access is slow
        order = sorted(range(len(rows)), key=lambda i: len(columns["input_ids"][i]))  # less padding per batch
        predicted_tags: list[list[str]] = [[] for _ in rows]
        outcome = NerOutcome()
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                features = tokenizer.pad(
                    {"input_ids": [columns["input_ids"][i] for i in idx],
                     "attention_mask": [columns["attention_mask"][i] for i in idx]},
                    return_tensors="pt",
                )
                logits = model(**{k: v.to(device) for k, v in features.items()}).logits.float()
                labels = torch.full(logits.shape[:2], IGNORE, dtype=torch.long)
                for j, i in enumerate(idx):
                    labels[j, : len(columns["labels"][i])] = torch.tensor(columns["labels"][i])
                labels = labels.to(device)
                mask = labels != IGNORE
                if mask.any():
                    loss = torch.nn.functional.cross_entropy(logits[mask], labels[mask], reduction="sum")
                    outcome.loss_sum += float(loss)
                    outcome.loss_count += int(mask.sum())
                best = logits.argmax(-1).cpu()
                for j, i in enumerate(idx):
                    tags = [self.labels[int(best[j, p])] for p in columns["first_subword"][i]]
                    tags += ["O"] * (len(rows[i]["tokens"]) - len(tags))  # truncated words
                    predicted_tags[i] = tags
        if was_training:
            model.train()
        outcome.gold = [bio_to_spans(r["tags"]) for r in rows]
        outcome.pred = [bio_to_spans(t) for t in predicted_tags]
        return outcome

    def validation_loss(self, resident: Any, rows: list[dict[str, Any]], dataset: Any, batch_size: int,
                        completion_only: bool = True) -> tuple[float, int]:
        """(summed cross-entropy, labelled tokens): every labelled token is a target, so `completion_only` (a
        causal-model notion) changes nothing."""
        outcome = self.predict(resident, rows, dataset, batch_size)
        return outcome.loss_sum, outcome.loss_count

    counts = staticmethod(ner_counts)
    score_counts = staticmethod(score_ner_counts)
