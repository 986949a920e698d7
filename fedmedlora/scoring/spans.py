"""Entity spans over tokens, BIO decoding/encoding, and corpus-level strict and lenient NER scores.

Scoring follows the Fed-MedLoRA seed: micro counts over the corpus; strict = same start and end; lenient = at least
one token in common, matched one-to-one by a maximum matching (see ``matching`` for the rule). The seed-compatible
headline collapses entity types; typed micro, typed macro and per-type scores are reported beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .matching import ItemKind, tally
from .typed_scores import TypedScores


@dataclass(frozen=True, order=True)
class Span:
    """Tokens ``start`` to ``end`` (exclusive) of one sentence or document, of entity type ``type``."""

    start: int
    end: int
    type: str

    def __post_init__(self) -> None:
        if not isinstance(self.start, int) or not isinstance(self.end, int) or self.start < 0:
            raise ValueError(f"Span offsets must be non-negative ints, got start={self.start!r} end={self.end!r}")
        if self.end <= self.start:
            raise ValueError(f"Span must cover at least one token (end is exclusive), got [{self.start}, {self.end})")
        if not isinstance(self.type, str) or not self.type:
            raise ValueError(f"Span type must be a non-empty string, got {self.type!r}")

    def __len__(self) -> int:
        return self.end - self.start

    def overlap(self, other: Span) -> int:
        """Number of tokens the two spans share."""
        return max(0, min(self.end, other.end) - max(self.start, other.start))


def _split_tag(tag: str, position: int) -> tuple[str, str | None]:
    if not isinstance(tag, str):
        raise ValueError(f"tag at position {position} is {tag!r}, not a string")
    if tag == "O":
        return "O", None
    prefix, dash, entity_type = tag.partition("-")
    if dash and prefix in ("B", "I") and entity_type:
        return prefix, entity_type
    raise ValueError(f"tag {tag!r} at position {position} is not BIO: expected 'O', 'B-<type>' or 'I-<type>'")


def bio_to_spans(tags: Sequence[str]) -> list[Span]:
    """Spans of a BIO/IOB2 tag sequence, decoded as conlleval does.

    ``B-X`` starts a span; ``I-X`` continues the current span only when it is of type X, otherwise it starts a new
    one (so ``I-`` without ``B-`` still yields an entity, as do IOB1 files); ``O`` ends the current span.
    """
    if isinstance(tags, str):
        raise TypeError("bio_to_spans takes a sequence of tags, not one string")
    spans: list[Span] = []
    start: int | None = None
    current: str | None = None
    for position, tag in enumerate(tags):
        prefix, entity_type = _split_tag(tag, position)
        continues = prefix == "I" and entity_type == current
        if current is not None and not continues:
            spans.append(Span(start, position, current))
            current = None
        if prefix != "O" and not continues:
            start, current = position, entity_type
    if current is not None:
        spans.append(Span(start, len(tags), current))
    return spans


def spans_to_bio(spans: Sequence[Span], length: int) -> list[str]:
    """BIO tags of ``length`` tokens; spans must lie inside and must not overlap (BIO cannot express that)."""
    tags = ["O"] * length
    for span in sorted(spans):
        if span.end > length:
            raise ValueError(f"{span} ends past the {length} tokens")
        if any(tag != "O" for tag in tags[span.start : span.end]):
            raise ValueError(f"{span} overlaps another span: BIO cannot encode overlapping spans")
        tags[span.start] = f"B-{span.type}"
        for position in range(span.start + 1, span.end):
            tags[position] = f"I-{span.type}"
    return tags


class EntityScores(TypedScores):
    """NER scores; see ``TypedScores`` for ``flat()``, ``to_dict()`` and ``table()``."""

    type_heading = "entity type"


def _span_bounds(span: Span) -> tuple[int, int]:
    if not isinstance(span, Span):
        raise TypeError(f"expected a Span, got {type(span).__name__}: {span!r}")
    return span.start, span.end


SPAN_KIND: ItemKind[Span] = ItemKind(
    key=_span_bounds,
    overlap=lambda gold, pred: gold.overlap(pred),
    type_of=lambda span: span.type,
)


def score_spans(gold: Sequence[Sequence[Span]], pred: Sequence[Sequence[Span]]) -> EntityScores:
    """Corpus-level entity scores; ``gold[i]`` and ``pred[i]`` are the spans of document (or sentence) i."""
    return EntityScores.from_tally(tally(gold, pred, SPAN_KIND))
