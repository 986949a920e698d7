"""One `data.datasets` entry: what it names (a bundled dataset, a file, a Hugging Face dataset id) and its rows.

Every entry is checked the same way for every task before anything is read, so a mistake gets a message that says
what to write instead: a bundled name of another task ("ncbi_disease is a bundled NER dataset" rather than "file
'ncbi_disease' does not exist"), a misspelt bundled name (the bundled names and the closest one), a folder, a missing
file. A file that fails to parse gets a hint when its name suggests another task's format. `entry_rows` reads one
entry, so a preflight (or a site checking its own files) can check each entry on its own and collect every problem.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from .files import DataFormatError, missing_file, user_path
from .instruct import BUNDLED_INSTRUCT, instruct_rows
from .ner import BUNDLED_NER, ner_rows
from .relations import BUNDLED_RE, re_rows

READERS = {"ner": ner_rows, "re": re_rows, "instruct": instruct_rows}
BUNDLED: dict[str, tuple[str, ...]] = {"ner": tuple(BUNDLED_NER), "re": tuple(BUNDLED_RE),
                                       "instruct": tuple(sorted(BUNDLED_INSTRUCT))}
KIND = {"ner": "NER", "re": "relation-extraction", "instruct": "instruction-tuning"}
SHORT = {"ner": "NER", "re": "RE", "instruct": "instruct"}
WHAT_ELSE = {  # besides bundled names, what an entry of each task may be
    "ner": "a CoNLL/BIO file (.tsv, .conll, optionally .gz)",
    "re": "a PubTator file or a ChemProt-style JSONL file",
    "instruct": "a JSONL file (prompt/completion, instruction/input/output or question/answer) or a Hugging Face "
                "dataset id ('org/name')",
}
# File names that suggest a task's format (a hint when a file fails to parse under another task).
SUFFIX_TASKS = {".tsv": "ner", ".conll": "ner", ".bio": "ner", ".iob": "ner", ".pubtator": "re"}


def _data_suffix(name: str) -> str:
    suffixes = [s for s in Path(name).suffixes if s != ".gz"]
    return suffixes[-1].lower() if suffixes else ""


def _looks_like_a_name(name: str) -> bool:
    """A bare word (no folder, no data suffix): meant as a bundled name, not as a file."""
    return "/" not in name and os.sep not in name and not name.startswith((".", "~")) and not _data_suffix(name)


def entry_problem(task: str, name: str) -> str | None:
    """What is wrong with `name` as a `data.datasets` entry of `task`, without reading it (None: go and read it)."""
    if name in BUNDLED[task]:
        return None
    bundled = ", ".join(BUNDLED[task])
    for other, names in BUNDLED.items():
        if other != task and name in names:
            return (f"key 'data.datasets': {name!r} is a bundled {KIND[other]} dataset, but data.task = {task!r} "
                    f"reads {KIND[task]} data. Bundled {SHORT[task]} datasets: {bundled}; an entry may also be "
                    f"{WHAT_ELSE[task]}. Or set data.task = {other!r}.")
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        return f"key 'data.datasets': {name!r} is a folder; name a file in it: an entry may be {WHAT_ELSE[task]}"
    if path.exists():
        return None
    resolved = user_path(name)
    if resolved is None and task == "instruct":
        return None  # a hub id ('org/name'): the reader loads it, and names it if that fails
    if resolved is None or _looks_like_a_name(name):
        everything = [n for names in BUNDLED.values() for n in names]
        close = difflib.get_close_matches(name, everything, n=1, cutoff=0.6)
        suggestion = f"; did you mean {close[0]!r}?" if close else "."
        return (f"key 'data.datasets': {name!r} is neither a bundled {SHORT[task]} dataset ({bundled}) nor an "
                f"existing file{suggestion} An entry may also be {WHAT_ELSE[task]}.")
    return str(missing_file(name, resolved))


def _format_hint(task: str, name: str) -> str:
    suggested = SUFFIX_TASKS.get(_data_suffix(name))
    if suggested and suggested != task:
        return f" (a {_data_suffix(name)} file is usually {KIND[suggested]} data: is data.task = {suggested!r} meant?)"
    return ""


def entry_rows(task: str, name: str) -> list[dict[str, Any]]:
    """The rows of one entry; raises `DataFormatError` naming the entry, the file and line, or the key."""
    if task not in READERS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(READERS)}")
    if problem := entry_problem(task, name):
        raise DataFormatError(problem)
    try:
        return READERS[task]([name])
    except DataFormatError as err:
        raise DataFormatError(f"{err}{_format_hint(task, name)}") from None


def entry_problems(task: str, name: str) -> list[str]:
    """Every problem of one entry (none or one today), reading it: what a site runs on its own files at start."""
    try:
        entry_rows(task, name)
    except DataFormatError as err:
        return [str(err)]
    return []
