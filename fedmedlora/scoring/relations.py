"""Relation triples and corpus-level strict and lenient relation-extraction scores.

A ``Relation`` is directed (head -> tail) and comes in one of two granularities, never mixed within a scoring call:

- **mention level**: head and tail are ``Span``s of the document's tokens. Strict: both spans have the same
  boundaries (and the relation type is equal, for typed scores). Lenient: each of head and tail shares at least one
  token with its counterpart. The entity types of the argument spans are not compared (that is NER's job).
- **concept level**: head and tail are strings, e.g. MeSH ids (BC5CDR CID relations are document-level pairs of
  ids) or the surface strings an LLM writes. Strings are compared after ``normalize_concept`` (Unicode NFKC,
  case-folded, whitespace collapsed). Strict: both normalised strings equal. Lenient: head and tail each share at
  least one word token (a run of letters/digits, see ``concept_tokens``) with their counterparts; there is no
  stop-word list, so e.g. "acid" leniently matches "acetic acid". A document's concept-level relations are a set:
  repeats of the same normalised triple (or pair, for the types-collapsed headline) count once.

Matching is one-to-one as for entities (``matching``: a maximum matching for lenient), the overlap being the sum
of head and tail overlaps. The headline ignores the relation type ("was the pair found"); typed micro, macro and per
relation type scores are reported beside it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

from .matching import ItemKind, tally
from .spans import Span
from .typed_scores import TypedScores

_WORD = re.compile(r"\w+")


def normalize_concept(text: str) -> str:
    """Comparison form of a concept string: NFKC, case-folded, runs of whitespace made one space, stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def concept_tokens(text: str) -> set[str]:
    """Word tokens of a concept string (for lenient matching): runs of letters and digits, case-folded."""
    return set(_WORD.findall(normalize_concept(text)))


@dataclass(frozen=True)
class Relation:
    """A directed relation ``head -> tail`` of type ``type``; head and tail are both ``Span`` or both ``str``."""

    head: Span | str
    tail: Span | str
    type: str

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not self.type.strip():
            raise ValueError(f"Relation type must be a non-empty string, got {self.type!r}")
        both_spans = isinstance(self.head, Span) and isinstance(self.tail, Span)
        both_strings = isinstance(self.head, str) and isinstance(self.tail, str)
        if not (both_spans or both_strings):
            raise ValueError(
                f"Relation head and tail must both be Spans or both be strings, got {self.head!r} and {self.tail!r}"
            )
        for name in ("head", "tail"):
            value = getattr(self, name)
            if isinstance(value, str) and not concept_tokens(value):
                raise ValueError(f"Relation {name} {value!r} has no word characters to compare")

    @property
    def is_mention_level(self) -> bool:
        return isinstance(self.head, Span)


class RelationScores(TypedScores):
    """RE scores; see ``TypedScores`` for ``flat()``, ``to_dict()`` and ``table()``."""

    type_heading = "relation type"


def _mention_key(relation: Relation) -> tuple[tuple[int, int], tuple[int, int]]:
    return (relation.head.start, relation.head.end), (relation.tail.start, relation.tail.end)


def _mention_overlap(gold: Relation, pred: Relation) -> float:
    head, tail = gold.head.overlap(pred.head), gold.tail.overlap(pred.tail)
    return float(head + tail) if head and tail else 0.0


def _concept_key(relation: Relation) -> tuple[str, str]:
    return normalize_concept(relation.head), normalize_concept(relation.tail)


def _concept_overlap(gold: Relation, pred: Relation) -> float:
    head = len(concept_tokens(gold.head) & concept_tokens(pred.head))
    tail = len(concept_tokens(gold.tail) & concept_tokens(pred.tail))
    return float(head + tail) if head and tail else 0.0


MENTION_RELATIONS: ItemKind[Relation] = ItemKind(
    key=_mention_key, overlap=_mention_overlap, type_of=lambda relation: relation.type
)
CONCEPT_RELATIONS: ItemKind[Relation] = ItemKind(
    key=_concept_key, overlap=_concept_overlap, type_of=lambda relation: relation.type, as_set=True
)


def _granularity(gold: Sequence[Sequence[Relation]], pred: Sequence[Sequence[Relation]]) -> ItemKind[Relation]:
    levels = set()
    for relation in chain.from_iterable(chain(gold, pred)):
        if not isinstance(relation, Relation):
            raise TypeError(f"expected Relation items, got {type(relation).__name__}: {relation!r}")
        levels.add(relation.is_mention_level)
    if len(levels) > 1:
        raise ValueError("cannot score mention-level (Span) and concept-level (str) relations together")
    return MENTION_RELATIONS if levels == {True} else CONCEPT_RELATIONS


def score_relations(gold: Sequence[Sequence[Relation]], pred: Sequence[Sequence[Relation]]) -> RelationScores:
    """Corpus-level relation scores; ``gold[i]`` and ``pred[i]`` are the relations of document i."""
    if isinstance(gold, (str, bytes)) or isinstance(pred, (str, bytes)):
        raise TypeError("gold and pred must be sequences of documents, each a sequence of Relations")
    return RelationScores.from_tally(tally(gold, pred, _granularity(gold, pred)))
