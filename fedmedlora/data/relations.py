"""RE rows of named datasets: the bundled corpora (bc5cdr_cid, chemprot) and users' PubTator or ChemProt-style JSONL
files (told apart by their first line). Row fields: relation_fields.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedmedlora_data import data_path

from .chemprot import chemprot_rows
from .files import DataFormatError, missing_file, source_name, text_lines, user_path
from .pubtator import pubtator_rows

# The corpus's own split of each bundled file (the eval module scores a checkpoint on the official test split).
BUNDLED_RE: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "bc5cdr_cid": (("re", "bc5cdr_cid"), {"CDR_TrainingSet.PubTator.txt.gz": "train",
                                         "CDR_DevelopmentSet.PubTator.txt.gz": "val",
                                         "CDR_TestSet.PubTator.txt.gz": "test"}),
    "chemprot": (("re", "chemprot"), {"train.txt.gz": "train", "dev.txt.gz": "val", "test.txt.gz": "test"}),
}


def _is_jsonl(path: Path) -> bool:
    """ChemProt-style JSONL or PubTator, told apart by the first non-blank line (both ship as .txt)."""
    for _, line in text_lines(path):
        if line.strip():
            return line.lstrip().startswith("{")
    return False


def file_rows(path: Path, source: str, split: str = "all") -> list[dict[str, Any]]:
    reader = chemprot_rows if _is_jsonl(path) else pubtator_rows
    return reader(path, source, split)


def re_rows(datasets: list[str]) -> list[dict[str, Any]]:
    """Rows of bundled RE corpora (bc5cdr_cid, chemprot) and users' PubTator / ChemProt-style JSONL files."""
    rows: list[dict[str, Any]] = []
    for name in datasets:
        if name in BUNDLED_RE:
            folder, files = BUNDLED_RE[name]
            for file, split in files.items():
                rows.extend(file_rows(data_path(*folder, file), name, split))
            continue
        path = user_path(name)
        if path is None or (not path.exists() and "/" not in name and not Path(name).suffix):  # a misspelt name
            raise DataFormatError(f"key 'data.datasets': {name!r} is neither a bundled RE dataset "
                                  f"({', '.join(BUNDLED_RE)}) nor a path to a PubTator or ChemProt-style JSONL file")
        if not path.is_file():
            raise missing_file(name, path)
        rows.extend(file_rows(path, source_name(path)))
    return rows
