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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmedlora_data import data_path

from .conll import DataFormatError, _open_text, read_jsonl
from .scoring.relations import normalize_concept

NONE_LABEL = "none"

# The corpus's own split of each bundled file (the eval module scores a checkpoint on the official test split).
BUNDLED_RE: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "bc5cdr_cid": (("re", "bc5cdr_cid"), {"CDR_TrainingSet.PubTator.txt.gz": "train",
                                         "CDR_DevelopmentSet.PubTator.txt.gz": "val",
                                         "CDR_TestSet.PubTator.txt.gz": "test"}),
    "chemprot": (("re", "chemprot"), {"train.txt.gz": "train", "dev.txt.gz": "val", "test.txt.gz": "test"}),
}

_HEAD_MARK = re.compile(r"<< (.+?) >>")
_TAIL_MARK = re.compile(r"\[\[ (.+?) \]\]")
_WORD = re.compile(r"\w")
_TITLE = re.compile(r"^([^|\t]+)\|t\|(.*)$")
_ABSTRACT = re.compile(r"^([^|\t]+)\|a\|(.*)$")

CHEMPROT_HINT = ("Each relation links a chemical and a gene or protein of the sentence; the head is the one "
                 "mentioned first.")


def _has_word(text: str) -> bool:
    return bool(_WORD.search(text))


def _majority_label(relations: list[dict[str, str]]) -> str:
    types = Counter(r["type"] for r in relations)
    return types.most_common(1)[0][0] if types else NONE_LABEL


# ---------------------------------------------------------------------------------------------------------------
# PubTator


@dataclass
class _Mention:
    start: int
    end: int
    text: str
    type: str
    ids: list[str]
    parts: list[str]  # the individual mention of each id (composite mentions), else the text itself


@dataclass
class _Document:
    pmid: str
    line: int
    title: str = ""
    abstract: str | None = None
    mentions: list[_Mention] = field(default_factory=list)
    relations: list[tuple[str, str, str, int]] = field(default_factory=list)  # (type, head id, tail id, line)

    @property
    def text(self) -> str:
        return self.title if self.abstract is None else f"{self.title} {self.abstract}"


def read_pubtator(path: str | Path) -> list[_Document]:
    """Documents of a PubTator file (optionally gzipped); a malformed line raises naming file and line."""
    path = Path(path)
    docs: list[_Document] = []
    current: _Document | None = None
    with _open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            where = f"{path}:{lineno}"
            if not line.strip():
                current = None
                continue
            if m := _TITLE.match(line):
                current = _Document(pmid=m.group(1), line=lineno, title=m.group(2))
                docs.append(current)
                continue
            if current is None:
                raise DataFormatError(f"{where}: expected a title line 'PMID|t|title' to start a document, "
                                      f"found {line[:60]!r}")
            if m := _ABSTRACT.match(line):
                if m.group(1) != current.pmid or current.abstract is not None or current.mentions:
                    raise DataFormatError(f"{where}: abstract line of {m.group(1)!r} out of place in document "
                                          f"{current.pmid!r} (started line {current.line})")
                current.abstract = m.group(2)
                continue
            fields = line.split("\t")
            if fields[0] != current.pmid:
                raise DataFormatError(f"{where}: line of document {fields[0]!r} inside document {current.pmid!r} "
                                      f"(started line {current.line}); is a blank line missing?")
            if len(fields) >= 6 and fields[1].isdigit() and fields[2].isdigit():
                current.mentions.append(_mention(fields, current.text, where))
            elif len(fields) >= 4 and not fields[1].isdigit():
                if not fields[1].strip() or not fields[2].strip() or not fields[3].strip():
                    raise DataFormatError(f"{where}: relation line needs 'PMID<TAB>type<TAB>head-id<TAB>tail-id'")
                current.relations.append((fields[1].strip(), fields[2].strip(), fields[3].strip(), lineno))
            else:
                raise DataFormatError(
                    f"{where}: expected a mention 'PMID<TAB>start<TAB>end<TAB>text<TAB>type<TAB>id' or a relation "
                    f"'PMID<TAB>type<TAB>head-id<TAB>tail-id', found {len(fields)} tab-separated fields: "
                    f"{line[:80]!r}")
    if not docs:
        raise DataFormatError(f"{path}: no PubTator document (expected 'PMID|t|title' lines)")
    return docs


def _mention(fields: list[str], text: str, where: str) -> _Mention:
    start, end = int(fields[1]), int(fields[2])
    if not 0 <= start < end <= len(text):
        raise DataFormatError(f"{where}: mention offsets {start}-{end} outside the document's {len(text)} "
                              "characters (title + space + abstract)")
    if text[start:end] != fields[3]:
        raise DataFormatError(f"{where}: mention text {fields[3]!r} differs from the document's characters "
                              f"{start}-{end} ({text[start:end]!r})")
    ids = [i.strip() for i in fields[5].split("|")]
    parts = [p.strip() for p in fields[6].split("|")] if len(fields) > 6 and fields[6].strip() else []
    if len(parts) != len(ids) or not all(parts):
        parts = [fields[3]] * len(ids)
    return _Mention(start, end, fields[3], fields[4].strip(), ids, parts)


def _concept_names(doc: _Document) -> tuple[dict[str, str], dict[str, str], dict[str, list[_Mention]]]:
    """(id -> unique name, id -> entity type, id -> mentions) for the concepts of a document, in text order."""
    mentions: dict[str, list[_Mention]] = {}
    types: dict[str, str] = {}
    candidates: dict[str, list[str]] = {}
    for mention in sorted(doc.mentions, key=lambda m: (m.start, m.end)):
        for cid, part in zip(mention.ids, mention.parts):
            if cid in ("-1", ""):
                continue
            mentions.setdefault(cid, []).append(mention)
            types.setdefault(cid, mention.type)
            candidates.setdefault(cid, [])
    for cid, ms in mentions.items():
        alone = [m.text for m in ms if len(m.ids) == 1]
        parts = [part for m in ms for i, part in zip(m.ids, m.parts) if i == cid and len(m.ids) > 1]
        candidates[cid] = [t for t in alone + parts + [m.text for m in ms] if _has_word(t)]
    names: dict[str, str] = {}
    taken: set[str] = set()
    for cid in mentions:
        free = [t for t in candidates[cid] if normalize_concept(t) not in taken]
        name = free[0] if free else f"{(candidates[cid] or [cid])[0]} ({cid})"
        names[cid] = " ".join(name.split())
        taken.add(normalize_concept(names[cid]))
    return names, types, mentions


def _closest(heads: list[_Mention], tails: list[_Mention]) -> tuple[_Mention, _Mention]:
    """The head and tail mentions nearest each other, preferring ones that do not overlap."""
    def cost(pair: tuple[_Mention, _Mention]) -> tuple[int, int, int]:
        h, t = pair
        gap = max(t.start - h.end, h.start - t.end)
        return (int(gap < 0), abs(gap), min(h.start, t.start))

    return min(((h, t) for h in heads for t in tails), key=cost)


def pubtator_rows(path: Path, source: str, split: str) -> list[dict[str, Any]]:
    docs = read_pubtator(path)
    # Candidate pairs: the (head type, tail type) combinations the file's relations use.
    parsed = []
    role_types: list[tuple[str, str]] = []
    for doc in docs:
        names, types, mentions = _concept_names(doc)
        for rel_type, head, tail, lineno in doc.relations:
            for cid in (head, tail):
                if cid not in names:
                    raise DataFormatError(f"{path}:{lineno}: relation names concept {cid!r}, which no mention of "
                                          f"document {doc.pmid} (line {doc.line}) annotates")
            if (types[head], types[tail]) not in role_types:
                role_types.append((types[head], types[tail]))
        parsed.append((doc, names, types, mentions))
    hint = " ".join(f"A {rel} relation goes from a {h} (head) to a {t} (tail)." for rel, (h, t) in sorted({
        (r[0], (types[r[1]], types[r[2]])) for doc, names, types, _ in parsed for r in doc.relations}))
    rows = []
    for doc, names, types, mentions in parsed:
        gold = {(head, tail): rel_type for rel_type, head, tail, _ in doc.relations}
        relations = [{"head": names[h], "type": t, "tail": names[tl]} for t, h, tl, _ in doc.relations]
        pairs = []
        for head_type, tail_type in role_types:
            for head in (c for c in names if types[c] == head_type):
                for tail in (c for c in names if types[c] == tail_type and c != head):
                    h, t = _closest(mentions[head], mentions[tail])
                    pairs.append({"head": names[head], "tail": names[tail],
                                  "label": gold.get((head, tail), NONE_LABEL),
                                  "head_start": h.start, "head_end": h.end,
                                  "tail_start": t.start, "tail_end": t.end})
        aliases = sorted({(normalize_concept(text), names[cid])
                          for cid, ms in mentions.items()
                          for m in ms
                          for text in [m.text, *(p for i, p in zip(m.ids, m.parts) if i == cid)]
                          if _has_word(text)})
        rows.append({
            "uid": f"{source}/{path.name}/{doc.pmid}",
            "source": source,
            "split": split,
            "format": "pubtator",
            "text": doc.text,
            "hint": hint,
            "relations": relations,
            "pairs": pairs,
            "aliases": [{"alias": a, "name": n} for a, n in aliases],
            "label": _majority_label(relations),
        })
    return rows


# ---------------------------------------------------------------------------------------------------------------
# ChemProt JSONL


def _chemprot_instance(record: Any, where: str) -> tuple[str, dict[str, Any]]:
    """(text without markers, pair) of one JSONL record."""
    if not isinstance(record, dict):
        raise DataFormatError(f"{where}: expected a JSON object with 'text' and 'label'")
    text, label = record.get("text"), record.get("label")
    if not isinstance(text, str) or not isinstance(label, str) or not label.strip():
        raise DataFormatError(f"{where}: expected string fields 'text' and 'label' (non-empty); "
                              f"found {sorted(record)}")
    heads, tails = list(_HEAD_MARK.finditer(text)), list(_TAIL_MARK.finditer(text))
    if len(heads) != 1 or len(tails) != 1:
        raise DataFormatError(f"{where}: 'text' must mark one argument as '<< ... >>' and one as '[[ ... ]]' "
                              f"(found {len(heads)} and {len(tails)})")
    head, tail = heads[0], tails[0]
    if not (head.end() <= tail.start() or tail.end() <= head.start()):
        raise DataFormatError(f"{where}: the '<< >>' and '[[ ]]' arguments overlap")
    if not _has_word(head.group(1)) or not _has_word(tail.group(1)):
        raise DataFormatError(f"{where}: an argument has no letter or digit: {head.group(1)!r}, {tail.group(1)!r}")
    # Remove the markers, keeping track of where the arguments land in the clean text.
    spans: dict[str, tuple[int, int]] = {}
    clean, cursor = [], 0
    for name, match in sorted((("head", head), ("tail", tail)), key=lambda item: item[1].start()):
        clean.append(text[cursor:match.start()])
        start = sum(map(len, clean))
        clean.append(match.group(1))
        spans[name] = (start, start + len(match.group(1)))
        cursor = match.end()
    clean.append(text[cursor:])
    pair = {"head": head.group(1).strip(), "tail": tail.group(1).strip(), "label": label.strip(),
            "head_start": spans["head"][0], "head_end": spans["head"][1],
            "tail_start": spans["tail"][0], "tail_end": spans["tail"][1]}
    return "".join(clean), pair


def chemprot_rows(path: Path, source: str, split: str) -> list[dict[str, Any]]:
    sentences: dict[str, dict[str, Any]] = {}
    for lineno, record in read_jsonl(path):
        text, pair = _chemprot_instance(record, f"{path}:{lineno}")
        unit = sentences.setdefault(text, {"line": lineno, "pairs": []})
        unit["pairs"].append(pair)
    if not sentences:
        raise DataFormatError(f"{path}: no rows")
    rows = []
    for text, unit in sentences.items():
        relations = [{"head": p["head"], "type": p["label"], "tail": p["tail"]} for p in unit["pairs"]]
        rows.append({
            "uid": f"{source}/{path.name}/{unit['line']}",
            "source": source,
            "split": split,
            "format": "chemprot",
            "text": text,
            "hint": CHEMPROT_HINT,
            "relations": relations,
            "pairs": unit["pairs"],
            "aliases": [],
            "label": _majority_label(relations),
        })
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Dataset names and files


def _is_jsonl(path: Path) -> bool:
    """ChemProt-style JSONL or PubTator, told apart by the first non-blank line (both ship as .txt)."""
    with _open_text(path) as fh:
        for line in fh:
            if line.strip():
                return line.lstrip().startswith("{")
    return False


def file_rows(path: Path, source: str, split: str = "all") -> list[dict[str, Any]]:
    reader = chemprot_rows if _is_jsonl(path) else pubtator_rows
    return reader(path, source, split)


def re_rows(datasets: list[str]) -> list[dict[str, Any]]:
    """Rows of bundled RE corpora (bc5cdr_cid, chemprot) and users' PubTator / ChemProt-style JSONL files."""
    from .corpora import _missing_file, _source_name, _user_path

    rows: list[dict[str, Any]] = []
    for name in datasets:
        if name in BUNDLED_RE:
            folder, files = BUNDLED_RE[name]
            for file, split in files.items():
                rows.extend(file_rows(data_path(*folder, file), name, split))
            continue
        path = _user_path(name)
        if path is None or (not path.exists() and "/" not in name and not Path(name).suffix):  # a misspelt name
            raise DataFormatError(f"key 'data.datasets': {name!r} is neither a bundled RE dataset "
                                  f"({', '.join(BUNDLED_RE)}) nor a path to a PubTator or ChemProt-style JSONL file")
        if not path.is_file():
            raise _missing_file(name, path)
        rows.extend(file_rows(path, _source_name(path)))
    return rows


def relation_labels(rows: list[dict[str, Any]]) -> list[str]:
    """The encoder's classes: "none" first when some candidate pair has no relation, then the relation types."""
    labels = {p["label"] for r in rows for p in r["pairs"]} | {rel["type"] for r in rows for rel in r["relations"]}
    types = sorted(labels - {NONE_LABEL})
    return ([NONE_LABEL] if NONE_LABEL in labels else []) + types


def relation_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Gold relations per type (per-site statistics)."""
    return dict(sorted(Counter(rel["type"] for r in rows for rel in r["relations"]).items()))
