"""ChemProt-style JSONL (SciBERT's release): one marked pair a line, grouped into one RE row per sentence.

See relation_fields.py for the row fields.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .files import DataFormatError, read_jsonl
from .relation_fields import has_word, majority_label

_HEAD_MARK = re.compile(r"<< (.+?) >>")
_TAIL_MARK = re.compile(r"\[\[ (.+?) \]\]")

CHEMPROT_HINT = ("Each relation links a chemical and a gene or protein of the sentence; the head is the one "
                 "mentioned first.")


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
    if not has_word(head.group(1)) or not has_word(tail.group(1)):
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
            "label": majority_label(relations),
        })
    return rows
