"""One-to-one matching of gold and predicted items per document, tallied into strict and lenient counts.

Shared by entity spans and relation triples. An item kind supplies three functions:
- ``key(item)``: its identity with the type left out (span boundaries; head and tail of a relation);
  a strict match is an equal key;
- ``overlap(gold, pred) -> float``: how much two items overlap, > 0 meaning they match leniently
  (equal keys must overlap);
- ``type_of(item)``: the entity or relation type.

Both matchings are one-to-one (each gold and each predicted item is used at most once):
- **strict**: items with equal keys pair off (predicted items in order, each with the earliest unused gold item of
  the same key), so the strict count is, per key, the smaller of the gold and predicted counts;
- **lenient**: a *maximum* matching of the bipartite graph whose edges join overlapping gold and predicted items: as
  many pairs as any one-to-one assignment can make. A greedy rule (each prediction takes the gold item it overlaps
  most) can lose pairs: gold ``B B I I`` (two spans) against predicted ``B I I B`` (tokens 0-2 and 3) gives 1 pair
  greedily, 2 here. Among maximum matchings, the one with the most exact pairs is taken, then the one with the
  largest total overlap (which pairs are reported; the counts depend only on the size). The strict pairs are a
  matching of that graph, so lenient counts are never below strict ones.
"Order" is the sorted order of ``(key, type)``, i.e. text order for spans, so results do not depend on the order in
which callers list items.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from .counts import Counts

Item = TypeVar("Item")


@dataclass(frozen=True)
class Matching:
    """Index pairs (gold, predicted) of one document: the strict pairs (equal keys) and the lenient ones."""

    exact: list[tuple[int, int]]
    lenient: list[tuple[int, int]]

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return self.lenient


def _exact_pairs(gold: Sequence[Item], pred: Sequence[Item], key: Callable[[Item], Hashable]) -> list[tuple[int, int]]:
    free_gold_by_key: dict[Hashable, list[int]] = defaultdict(list)
    for gold_index, item in enumerate(gold):
        free_gold_by_key[key(item)].append(gold_index)
    for indices in free_gold_by_key.values():
        indices.reverse()  # pop() from the end yields the earliest gold item first
    exact = []
    for pred_index, item in enumerate(pred):
        candidates = free_gold_by_key.get(key(item))
        if candidates:
            exact.append((candidates.pop(), pred_index))
    return exact


def maximum_matching(weights: np.ndarray) -> list[tuple[int, int]]:
    """A maximum-cardinality matching of the bipartite graph whose edges are the positive entries of ``weights``
    (gold x predicted), and among maximum matchings one of largest total weight.

    Entries are 0 (no edge) or in (0, 2). Every edge is lifted by more than any matching's total weight, so one more
    pair always outweighs any tie-break, and the Hungarian algorithm (scipy's ``linear_sum_assignment``) on the
    lifted weights returns such a matching.
    """
    from scipy.optimize import linear_sum_assignment

    edges = weights > 0
    lifted = np.where(edges, weights + 2.0 * (min(weights.shape) + 1), 0.0)
    rows, cols = linear_sum_assignment(lifted, maximize=True)
    return [(int(g), int(p)) for g, p in zip(rows, cols) if edges[g, p]]


def match_one_to_one(
    gold: Sequence[Item],
    pred: Sequence[Item],
    key: Callable[[Item], Hashable],
    overlap: Callable[[Item, Item], float],
) -> Matching:
    """Strict pairs (equal keys) and a maximum lenient matching (see the module docstring)."""
    exact = _exact_pairs(gold, pred, key)
    if len(exact) == min(len(gold), len(pred)):  # one side is used up: no matching is larger
        return Matching(exact=exact, lenient=list(exact))
    amounts = np.zeros((len(gold), len(pred)))
    for g, gold_item in enumerate(gold):
        for p, pred_item in enumerate(pred):
            amounts[g, p] = max(float(overlap(gold_item, pred_item)), 0.0)
    edges = amounts > 0
    gold_free, pred_free = np.ones(len(gold), bool), np.ones(len(pred), bool)
    for g, p in exact:
        gold_free[g] = pred_free[p] = False
    # The strict pairs are already a maximum matching unless an augmenting path exists (Berge), and one needs a free
    # predicted item and a free gold item that each overlap something: most sentences stop here.
    if not (edges[:, pred_free].any() and edges[gold_free, :].any()):
        return Matching(exact=exact, lenient=list(exact))
    # Tie-breaks among maximum matchings: an exact pair adds 1; overlaps add their share of the total (< 1 in all).
    weights = np.where(edges, amounts / (amounts.sum() + 1.0), 0.0)
    for g, p in zip(*np.nonzero(edges)):
        if key(gold[g]) == key(pred[p]):
            weights[g, p] += 1.0
    lenient = sorted(maximum_matching(weights), key=lambda pair: pair[1])
    return Matching(exact=exact, lenient=lenient)


@dataclass(frozen=True)
class Tally:
    """Corpus-level counts: types collapsed (``strict``, ``lenient``) and per type."""

    strict: Counts
    lenient: Counts
    strict_by_type: dict[str, Counts]
    lenient_by_type: dict[str, Counts]
    documents: int


class ItemKind(Generic[Item]):
    """How to compare one kind of item; ``as_set`` drops repeats of the same (key, type) within a document."""

    def __init__(
        self,
        key: Callable[[Item], Hashable],
        overlap: Callable[[Item, Item], float],
        type_of: Callable[[Item], str],
        as_set: bool = False,
    ):
        self.key = key
        self.overlap = overlap
        self.type_of = type_of
        self.as_set = as_set

    def prepare(self, items: Sequence[Item], typed: bool) -> list[Item]:
        """Items sorted by (key, type); with ``as_set``, one per key (and per type when ``typed``)."""
        ordered = sorted(items, key=lambda item: (self.key(item), self.type_of(item)))
        if not self.as_set:
            return ordered
        seen: set[Hashable] = set()
        unique = []
        for item in ordered:
            identity = (self.key(item), self.type_of(item)) if typed else self.key(item)
            if identity not in seen:
                seen.add(identity)
                unique.append(item)
        return unique

    def count(self, gold: Sequence[Item], pred: Sequence[Item]) -> tuple[Counts, Counts]:
        """(strict, lenient) counts of one document, types ignored."""
        matching = match_one_to_one(gold, pred, self.key, self.overlap)
        strict_tp, lenient_tp = len(matching.exact), len(matching.pairs)
        strict = Counts(strict_tp, len(pred) - strict_tp, len(gold) - strict_tp)
        lenient = Counts(lenient_tp, len(pred) - lenient_tp, len(gold) - lenient_tp)
        return strict, lenient


def tally(
    gold_documents: Sequence[Sequence[Item]],
    pred_documents: Sequence[Sequence[Item]],
    kind: ItemKind[Item],
) -> Tally:
    """Micro counts over all documents, with types collapsed and per type (a type matches only itself)."""
    if isinstance(gold_documents, (str, bytes)) or isinstance(pred_documents, (str, bytes)):
        raise TypeError("gold and pred must be sequences of documents, each a sequence of items")
    if len(gold_documents) != len(pred_documents):
        raise ValueError(
            f"gold has {len(gold_documents)} documents but pred has {len(pred_documents)}: "
            "give one (possibly empty) item list per document on both sides"
        )
    strict = lenient = Counts()
    strict_by_type: dict[str, Counts] = defaultdict(Counts)
    lenient_by_type: dict[str, Counts] = defaultdict(Counts)
    for gold_items, pred_items in zip(gold_documents, pred_documents):
        doc_strict, doc_lenient = kind.count(kind.prepare(gold_items, False), kind.prepare(pred_items, False))
        strict, lenient = strict + doc_strict, lenient + doc_lenient

        gold_by_type: dict[str, list[Item]] = defaultdict(list)
        pred_by_type: dict[str, list[Item]] = defaultdict(list)
        for item in kind.prepare(gold_items, True):
            gold_by_type[kind.type_of(item)].append(item)
        for item in kind.prepare(pred_items, True):
            pred_by_type[kind.type_of(item)].append(item)
        for item_type in gold_by_type.keys() | pred_by_type.keys():
            type_strict, type_lenient = kind.count(gold_by_type[item_type], pred_by_type[item_type])
            strict_by_type[item_type] += type_strict
            lenient_by_type[item_type] += type_lenient
    return Tally(
        strict=strict,
        lenient=lenient,
        strict_by_type={t: strict_by_type[t] for t in sorted(strict_by_type)},
        lenient_by_type={t: lenient_by_type[t] for t in sorted(lenient_by_type)},
        documents=len(gold_documents),
    )
