"""Relation extraction on an encoder (BERT family): each candidate pair of a text unit, marked in the text, is
classified into a relation type or "none" (a sequence-classification head over [CLS]; Transformers Trainer).

Markers are plain text the WordPiece vocabulary already holds, so they need no new embeddings (the base stays
frozen): the head argument is wrapped as ``<< head >>`` and the tail as ``[[ tail ]]``, as in SciBERT's ChemProt
files, which are therefore fed exactly as given. When the marked text is longer than `data.max-length` tokens it is
cut to the window of that many tokens centred on the two arguments; when they are too far apart for one window, to
two windows, one around each argument, joined as a sentence pair.

Scores come from `score_relations` at concept level, as for the generative family: a unit's gold relations are its
(head name, type, tail name) triples, and each pair classified as a relation type predicts that triple. So the two
families share the metric, and on the same sites the same test units. The headline (`primary_metric`) is the typed
micro F1 over relation types ("none" is not a relation); the types-collapsed `strict-f1` only asks whether a pair
was found, which on ChemProt, whose pairs are all positive, an encoder always does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..data.relation_fields import NONE_LABEL, relation_labels, union_relation_labels
from ..scoring.count_record import counts_of
from ..scoring.relations import Relation, RelationScores, score_relations
from ..settings import ConfigError, Settings
from .base import Outcome, TaskBase, loss_counts, metrics_from_counts

HEAD_MARKERS = ("<< ", " >>")
TAIL_MARKERS = ("[[ ", " ]]")


@dataclass
class RelationOutcome(Outcome):
    """Gold and predicted relations of one evaluation split (one list per text unit), mergeable across sites; the
    loss is over classified pairs (encoder) or scored tokens (generative)."""

    gold: list[list[Relation]] = field(default_factory=list)
    pred: list[list[Relation]] = field(default_factory=list)


def gold_relations(row: dict[str, Any]) -> list[Relation]:
    return [Relation(r["head"], r["tail"], r["type"]) for r in row["relations"]]


def relation_outcome_counts(outcome: RelationOutcome) -> dict[str, float]:
    """Strict/lenient tp/fp/fn overall and per relation type, text units, and the loss sum: numbers only."""
    return {**counts_of(score_relations(outcome.gold, outcome.pred)), **loss_counts(outcome)}


def score_relation_counts(counts: Mapping[str, float]) -> dict[str, float]:
    return metrics_from_counts(RelationScores, counts)


def mark_pair(text: str, pair: dict[str, Any]) -> tuple[str, list[tuple[int, int]]]:
    """The text with both arguments wrapped in markers, and the character ranges of the two marked arguments
    (markers included), in text order."""
    spans = sorted([(pair["head_start"], pair["head_end"], HEAD_MARKERS), (pair["tail_start"], pair["tail_end"],
                                                                          TAIL_MARKERS)])
    pieces, ranges, cursor, length = [], [], 0, 0
    for start, end, (opening, closing) in spans:
        pieces.append(text[cursor:start])
        length += start - cursor
        marked = opening + text[start:end] + closing
        pieces.append(marked)
        ranges.append((length, length + len(marked)))
        length += len(marked)
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces), ranges


def _centred(lo: int, hi: int, width: int, n: int) -> tuple[int, int]:
    """A window of `width` tokens (or all `n`) holding tokens lo..hi-1, centred on them; from lo if they do not fit."""
    if hi - lo >= width:
        return lo, min(lo + width, n)
    left = max(0, lo - (width - (hi - lo)) // 2)
    right = min(n, left + width)
    return max(0, right - width), right


def _token_range(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """Tokens overlapping characters start..end-1."""
    inside = [i for i, (a, b) in enumerate(offsets) if b > start and a < end]
    return inside[0], inside[-1] + 1


def checked_relation_labels(settings: Settings, labels: list[str]) -> list[str]:
    if not [label for label in labels if label != NONE_LABEL]:
        raise ConfigError([f"key 'data.datasets' = {settings.data.datasets!r}: no relation found in the data"])
    return labels


class RelationClassificationTask(TaskBase):
    family = "encoder"
    head = "sequence"
    trainer_name = "transformers.Trainer"
    primary_metric = "typed-strict-micro-f1"
    training_items = "candidate-pairs"  # one classified row per marked pair, not per sentence

    def __init__(self, settings: Settings, labels: list[str]):
        super().__init__(settings, checked_relation_labels(settings, labels))
        self.labels = self.vocabulary_items
        self.label_id = {label: i for i, label in enumerate(self.labels)}

    vocabulary = staticmethod(relation_labels)
    union_vocabulary = staticmethod(union_relation_labels)

    def window(self, text: str, offsets: list[tuple[int, int]], ranges: list[tuple[int, int]],
               tokenizer: Any) -> tuple[str, str | None]:
        """The part of a marked text the model reads: all of it when it fits data.max-length, else the window
        around both arguments, else one window around each (a text pair)."""
        single = self.settings.data.max_length - tokenizer.num_special_tokens_to_add(pair=False)
        n = len(offsets)
        if n <= single:
            return text, None
        (a_lo, a_hi), (b_lo, b_hi) = (_token_range(offsets, *r) for r in ranges)

        def chars(lo: int, hi: int) -> str:
            return text[offsets[lo][0]:offsets[hi - 1][1]]

        if b_hi - a_lo <= single:
            return chars(*_centred(a_lo, b_hi, single, n)), None
        half = (self.settings.data.max_length - tokenizer.num_special_tokens_to_add(pair=True)) // 2
        first = _centred(a_lo, a_hi, half, n)
        second = _centred(b_lo, b_hi, half, n)
        second = (max(second[0], first[1]), second[1])  # never repeat tokens (the arguments are > half apart)
        return chars(*first), chars(*second)

    def tokenize(self, rows: list[dict[str, Any]], tokenizer: Any) -> Any:
        import datasets

        texts, ranges, labels, row_index, pair_index = [], [], [], [], []
        for i, row in enumerate(rows):
            for j, pair in enumerate(row["pairs"]):
                marked, arg_ranges = mark_pair(row["text"], pair)
                texts.append(marked)
                ranges.append(arg_ranges)
                labels.append(self.label_id[pair["label"]])
                row_index.append(i)
                pair_index.append(j)
        input_ids: list[list[int]] = [[] for _ in texts]
        if texts:
            # Tokenize whole texts for offsets, cut the window in characters, and tokenize the windows (with the
            # model's special tokens); verbose=False: a long abstract is expected here, it is windowed below.
            offsets = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True,
                                verbose=False)["offset_mapping"]
            windows = [self.window(t, o, r, tokenizer) for t, o, r in zip(texts, offsets, ranges)]
            limit = {"truncation": True, "max_length": self.settings.data.max_length}
            for paired in (False, True):
                idx = [k for k, (_, second) in enumerate(windows) if (second is not None) == paired]
                if not idx:
                    continue
                firsts = [windows[k][0] for k in idx]
                seconds = [windows[k][1] for k in idx] if paired else None
                for k, ids in zip(idx, tokenizer(firsts, seconds, **limit)["input_ids"]):
                    input_ids[k] = ids
        return datasets.Dataset.from_dict({
            "input_ids": input_ids,
            "attention_mask": [[1] * len(ids) for ids in input_ids],
            "labels": labels,
            "row": row_index,
            "pair": pair_index,
        })

    @staticmethod
    def count_tokens(dataset: Any) -> int:
        return int(sum(len(ids) for ids in dataset["input_ids"]))

    def make_trainer(self, resident: Any, train_dataset: Any, args: Any) -> Any:
        from transformers import DataCollatorWithPadding, Trainer

        return Trainer(
            model=resident.model,
            args=args,
            train_dataset=train_dataset.remove_columns(["row", "pair"]),
            data_collator=DataCollatorWithPadding(resident.tokenizer),
            processing_class=resident.tokenizer,
        )

    def predict(self, resident: Any, rows: list[dict[str, Any]], dataset: Any, batch_size: int) -> RelationOutcome:
        import torch

        model, tokenizer = resident.model, resident.tokenizer
        device = next(model.parameters()).device
        outcome = RelationOutcome(gold=[gold_relations(r) for r in rows], pred=[[] for _ in rows])
        if len(dataset) == 0:
            return outcome
        columns = dataset[:]  # one columnar read: row-wise Dataset access is slow
        order = sorted(range(len(dataset)), key=lambda i: len(columns["input_ids"][i]))  # less padding per batch
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                features = tokenizer.pad({"input_ids": [columns["input_ids"][i] for i in idx],
                                          "attention_mask": [columns["attention_mask"][i] for i in idx]},
                                         return_tensors="pt")
                logits = model(**{k: v.to(device) for k, v in features.items()}).logits.float()
                gold = torch.tensor([columns["labels"][i] for i in idx], device=device)
                outcome.loss_sum += float(torch.nn.functional.cross_entropy(logits, gold, reduction="sum"))
                outcome.loss_count += len(idx)
                for i, best in zip(idx, logits.argmax(-1).tolist()):
                    label = self.labels[best]
                    if label != NONE_LABEL:
                        pair = rows[columns["row"][i]]["pairs"][columns["pair"][i]]
                        outcome.pred[columns["row"][i]].append(Relation(pair["head"], pair["tail"], label))
        if was_training:
            model.train()
        return outcome

    def validation_loss(self, resident: Any, rows: list[dict[str, Any]], dataset: Any, batch_size: int,
                        completion_only: bool = True) -> tuple[float, int]:
        """(summed cross-entropy, classified pairs): every pair is a target, so `completion_only` (a causal-model
        notion) changes nothing."""
        outcome = self.predict(resident, rows, dataset, batch_size)
        return outcome.loss_sum, outcome.loss_count

    counts = staticmethod(relation_outcome_counts)
    score_counts = staticmethod(score_relation_counts)
