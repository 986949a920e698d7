"""NER rows from bundled corpora (NCBI-disease, BC5CDR) and users' CoNLL/BIO files.

A row: `uid` (stable across runs), `source` (the dataset: the unit of natural partitioning), `split` (the corpus's
own split; "all" for users' files), `tokens`, `tags`, `label` (the sentence's most frequent entity type, or "none":
a column to partition on).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fedmedlora_data import data_path

from .conll import read_conll
from .files import DataFormatError, missing_file, source_name, user_path

BUNDLED_NER = {
    "ncbi_disease": ("ner", "ncbi_disease"),
    "bc5cdr": ("ner", "bc5cdr"),
}
NER_SPLIT_FILES = ("train.tsv.gz", "devel.tsv.gz", "test.tsv.gz")
# The corpus's own split of a bundled file ("all" for users' files): sites pool every split and hold out their own
# validation and test rows, while the eval module scores a checkpoint on the official test split.
OFFICIAL_SPLIT = {"train.tsv.gz": "train", "devel.tsv.gz": "val", "test.tsv.gz": "test"}


def _majority_type(tags: list[str]) -> str:
    types = Counter(t[2:] for t in tags if t.startswith("B-"))
    return types.most_common(1)[0][0] if types else "none"


def ner_rows(datasets: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in datasets:
        if name in BUNDLED_NER:
            files = [data_path(*BUNDLED_NER[name], f) for f in NER_SPLIT_FILES]
            source = name
        else:
            path = user_path(name)
            if path is None:
                raise DataFormatError(
                    f"key 'data.datasets': {name!r} is neither a bundled NER dataset ({', '.join(BUNDLED_NER)}) "
                    "nor a path to a CoNLL file")
            if not path.is_file():
                raise missing_file(name, path)
            files, source = [path], source_name(path)
        for file in files:
            for i, (tokens, tags) in enumerate(read_conll(file)):
                rows.append({
                    "uid": f"{source}/{file.name}/{i}",
                    "source": source,
                    "split": OFFICIAL_SPLIT.get(file.name, "all"),
                    "tokens": tokens,
                    "tags": tags,
                    "label": _majority_type(tags),
                })
    return rows


def entity_types(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({t[2:] for r in rows for t in r["tags"] if t != "O"})
