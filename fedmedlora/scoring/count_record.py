"""Typed strict/lenient scores as a flat record of counts, and back: what a site sends instead of its predictions.

Every score `TypedScores` reports (types collapsed, typed micro and macro, per type) is a function of its `Counts`
(tp, fp, fn per mode, overall and per type) and the number of documents, and counts of disjoint corpora add. So a
site scores its own split, sends these integers (keyed by the agreed type names, never a span or a word of text), and
the server sums the sites' records and rebuilds exactly the scores it would get from the pooled predictions.

Keys: ``documents``; ``{strict,lenient}-{tp,fp,fn}`` (types collapsed); ``<type>/{strict,lenient}-{tp,fp,fn}`` for
each type seen in gold or predictions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .counts import Counts
from .typed_scores import MODES, TypedScores

FIELDS = ("tp", "fp", "fn")


def _put(out: dict[str, int], prefix: str, counts: Counts) -> None:
    for name in FIELDS:
        out[f"{prefix}-{name}"] = getattr(counts, name)


def _get(record: Mapping[str, float], prefix: str) -> Counts:
    try:
        return Counts(*(int(record[f"{prefix}-{name}"]) for name in FIELDS))
    except KeyError as err:
        raise ValueError(f"count record lacks {err.args[0]!r}") from None


def counts_of(scores: TypedScores) -> dict[str, int]:
    """The counts behind `scores` (see the module docstring for the keys)."""
    out: dict[str, int] = {"documents": scores.documents}
    for mode in MODES:
        _put(out, mode, scores.headline(mode))
        for item_type in scores.types:
            _put(out, f"{item_type}/{mode}", scores.by_type(mode).get(item_type, Counts()))
    return out


def scores_from_counts(cls: type[TypedScores], record: Mapping[str, float]) -> TypedScores:
    """`cls` (EntityScores, RelationScores) rebuilt from a count record, possibly the sum of several."""
    types = sorted({key.rsplit("/", 1)[0] for key in record if "/" in key})
    return cls(
        strict=_get(record, "strict"),
        lenient=_get(record, "lenient"),
        strict_by_type={t: _get(record, f"{t}/strict") for t in types},
        lenient_by_type={t: _get(record, f"{t}/lenient") for t in types},
        documents=int(record.get("documents", 0)),
    )


def sum_records(records: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Key-wise sums of count records (a key missing from a record counts 0), in the order given."""
    total: dict[str, float] = {}
    for record in records:
        for key, value in record.items():
            total[key] = total.get(key, 0) + value
    return total
