"""Relation-extraction data: PubTator files (BC5CDR CID) and ChemProt-style JSONL, read into one row per text unit.

The unit of an RE row is the text the relations live in, so a document or sentence is never split between sites or
between a site's train and test rows, and both model families see the same units:

- **PubTator** (``PMID|t|title``, ``PMID|a|abstract``, mention lines ``PMID<TAB>start<TAB>end<TAB>text<TAB>type<TAB>
  ids[<TAB>individual mentions]``, relation lines ``PMID<TAB>type<TAB>head-id<TAB>tail-id``; a blank line between
  documents): one row per document, text = title + " " + abstract (PubTator's offsets count that space). Relations
  are document-level between concepts (ids; "|" joins the ids of a composite mention, "-1" is no id). Each concept
  gets a **name**: its first mention that names it alone (else its part of a composite mention), made unique within
  the document; a relation is written with the names of its head and tail.
- **ChemProt JSONL** (SciBERT's release: ``{"text", "label"}``, one argument wrapped in ``<< >>`` and the other in
  ``[[ ]]``): one row per sentence, grouping the given pairs whose text is the same once the markers are removed.
  The head is the ``<< >>`` argument: in SciBERT's files always the one mentioned first (the files do not say which
  argument is the chemical). The release holds positive pairs only, so there is no "none" class.

Row fields: ``uid``, ``source`` (dataset name, or a user file's stem: the natural site), ``split`` (the corpus's own
split for bundled files, "all" for users' files), ``format``, ``text``, ``hint`` (one sentence on argument roles, for
prompts), ``relations`` (gold, ``{"head", "type", "tail"}`` with concept names), ``pairs`` (the encoder's candidates:
``{"head", "tail", "label", "head_start", "head_end", "tail_start", "tail_end"}``, label a relation type or
"none"), ``aliases`` (``{"alias", "name"}``: every normalised mention text of a concept, to map a generated string
back to the concept it names) and ``label`` (the unit's most frequent relation type, or "none": a column for the
Dirichlet partitioner).

Encoder candidates. PubTator: every pair of distinct concepts whose entity types are those of a relation in the same
file (BC5CDR: every chemical x disease concept pair of a document), labelled with the gold relation type or "none".
The marked mentions are the head and tail mentions closest to each other in the text (the smallest gap; ties: the
earliest), which is a sentence where both occur whenever there is one. ChemProt: the given pairs, as marked.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

NONE_LABEL = "none"

_WORD = re.compile(r"\w")


def has_word(text: str) -> bool:
    return bool(_WORD.search(text))


def majority_label(relations: list[dict[str, str]]) -> str:
    types = Counter(r["type"] for r in relations)
    return types.most_common(1)[0][0] if types else NONE_LABEL


def relation_labels(rows: list[dict[str, Any]]) -> list[str]:
    """The encoder's classes: "none" first when some candidate pair has no relation, then the relation types."""
    labels = {p["label"] for r in rows for p in r["pairs"]} | {rel["type"] for r in rows for rel in r["relations"]}
    types = sorted(labels - {NONE_LABEL})
    return ([NONE_LABEL] if NONE_LABEL in labels else []) + types


def union_relation_labels(label_sets: list[list[str]]) -> list[str]:
    """The labels of several sites together, in `relation_labels`' order ("none" first, then sorted types)."""
    labels = {label for labels in label_sets for label in labels}
    return ([NONE_LABEL] if NONE_LABEL in labels else []) + sorted(labels - {NONE_LABEL})


def relation_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Gold relations per type (per-site statistics)."""
    return dict(sorted(Counter(rel["type"] for r in rows for rel in r["relations"]).items()))
