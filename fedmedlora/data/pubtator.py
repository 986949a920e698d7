"""PubTator files (BC5CDR CID): documents, mentions and concept-level relations, one RE row per document.

See relation_fields.py for the row fields and the encoder's candidate pairs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..scoring.relations import normalize_concept
from .files import DataFormatError, text_lines
from .relation_fields import NONE_LABEL, has_word, majority_label

_TITLE = re.compile(r"^([^|\t]+)\|t\|(.*)$")
_ABSTRACT = re.compile(r"^([^|\t]+)\|a\|(.*)$")


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
    for lineno, line in text_lines(path):
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
        candidates[cid] = [t for t in alone + parts + [m.text for m in ms] if has_word(t)]
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
                          if has_word(text)})
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
            "label": majority_label(relations),
        })
    return rows
