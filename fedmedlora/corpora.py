"""Named datasets to rows: bundled corpora, users' own files, and (instruct only) Hugging Face datasets.

Every row carries `uid` (stable across runs) and `source` (the dataset or, for MedQuAD, the NIH subset): the unit of
natural partitioning. NER rows: `tokens`, `tags`, `label` (the sentence's most frequent entity type, or "none": a
column to partition on). Instruct rows: `prompt`, `completion`. RE rows (one per document or sentence): see
relations_data.py.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from fedmedlora_data import data_path

from .conll import DataFormatError, read_conll, read_jsonl

BUNDLED_NER = {
    "ncbi_disease": ("ner", "ncbi_disease"),
    "bc5cdr": ("ner", "bc5cdr"),
}
NER_SPLIT_FILES = ("train.tsv.gz", "devel.tsv.gz", "test.tsv.gz")
# The corpus's own split of a bundled file ("all" for users' files): sites pool every split and hold out their own
# validation and test rows, while the eval module scores a checkpoint on the official test split.
OFFICIAL_SPLIT = {"train.tsv.gz": "train", "devel.tsv.gz": "val", "test.tsv.gz": "test"}
BUNDLED_INSTRUCT = {"medquad"}

# Alpaca-style template, as FlowerTune's medical baseline formats instruction data.
PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def instruction_prompt(instruction: str, input_text: str = "") -> str:
    if input_text.strip():
        return PROMPT_WITH_INPUT.format(instruction=instruction.strip(), input=input_text.strip())
    return PROMPT_NO_INPUT.format(instruction=instruction.strip())


def _source_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".tsv", ".conll", ".txt", ".jsonl", ".json", ".bio", ".pubtator"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


FILE_SUFFIXES = {".gz", ".tsv", ".conll", ".txt", ".jsonl", ".json", ".bio", ".iob", ".pubtator"}


def _user_path(name: str) -> Path | None:
    """The file a dataset entry names; None when it reads as a hub id ("org/name") rather than a path."""
    path = Path(os.path.expanduser(name))
    if path.exists():
        return path.resolve()
    looks_like_file = name.startswith(("/", ".", "~")) or path.suffix in FILE_SUFFIXES or name.count("/") != 1
    return path.resolve() if looks_like_file else None


def _missing_file(name: str, path: Path) -> DataFormatError:
    return DataFormatError(
        f"key 'data.datasets': file {name!r} does not exist (looked at {path}). Relative paths resolve against the "
        "working directory of the process reading them: use absolute paths (`fedmedlora run` makes them absolute)."
    )


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
            path = _user_path(name)
            if path is None:
                raise DataFormatError(
                    f"key 'data.datasets': {name!r} is neither a bundled NER dataset ({', '.join(BUNDLED_NER)}) "
                    "nor a path to a CoNLL file")
            if not path.is_file():
                raise _missing_file(name, path)
            files, source = [path], _source_name(path)
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


def _medquad_rows() -> list[dict[str, Any]]:
    rows = []
    with gzip.open(data_path("instruct", "medquad", "medquad.jsonl.gz"), "rt", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            rows.append({
                "uid": f"medquad/{r['id']}",
                "source": r["source"],
                "qtype": r["qtype"],
                "prompt": instruction_prompt(r["question"]),
                "completion": r["answer"],
            })
    return rows


def _instruct_record(record: dict[str, Any], where: str) -> tuple[str, str]:
    """(prompt, completion) from one of the accepted instruction layouts."""
    if "prompt" in record and "completion" in record:
        prompt, completion = record["prompt"], record["completion"]
    elif "instruction" in record and "output" in record:
        prompt, completion = instruction_prompt(record["instruction"], record.get("input") or ""), record["output"]
    elif "question" in record and "answer" in record:
        prompt, completion = instruction_prompt(record["question"]), record["answer"]
    else:
        raise DataFormatError(f"{where}: expected fields prompt/completion, instruction/input/output or "
                              f"question/answer; found {sorted(record)}")
    if not isinstance(prompt, str) or not isinstance(completion, str) or not completion.strip():
        raise DataFormatError(f"{where}: prompt and completion must be strings and the completion non-empty")
    return prompt, completion


def _jsonl_instruct_rows(path: Path, source: str) -> list[dict[str, Any]]:
    rows = []
    for lineno, record in read_jsonl(path):
        if not isinstance(record, dict):
            raise DataFormatError(f"{path}:{lineno}: expected a JSON object")
        prompt, completion = _instruct_record(record, f"{path}:{lineno}")
        rows.append({"uid": f"{source}/{lineno}", "source": record.get("source", source),
                     "prompt": prompt, "completion": completion})
    if not rows:
        raise DataFormatError(f"{path}: no rows")
    return rows


def _hub_instruct_rows(name: str) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split="train")
    except Exception as err:  # the hub raises many types; the user needs the name and the cause
        raise DataFormatError(f"key 'data.datasets': cannot load Hugging Face dataset {name!r}: {err}") from None
    rows = []
    for i, record in enumerate(ds):
        prompt, completion = _instruct_record(dict(record), f"{name}[{i}]")
        rows.append({"uid": f"{name}/{i}", "source": name, "prompt": prompt, "completion": completion})
    return rows


def instruct_rows(datasets: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in datasets:
        if name in BUNDLED_INSTRUCT:
            rows.extend(_medquad_rows())
            continue
        path = _user_path(name)
        if path is not None:
            if not path.is_file():
                raise _missing_file(name, path)
            rows.extend(_jsonl_instruct_rows(path, _source_name(path)))
        else:
            rows.extend(_hub_instruct_rows(name))
    return rows


def load_rows(task: str, datasets: list[str]) -> list[dict[str, Any]]:
    """Rows of the named datasets (read once per process; callers must not modify them)."""
    return _load_rows(task, tuple(datasets))


@functools.lru_cache(maxsize=4)
def _load_rows(task: str, datasets: tuple[str, ...]) -> list[dict[str, Any]]:
    if task == "ner":
        return ner_rows(list(datasets))
    if task == "instruct":
        return instruct_rows(list(datasets))
    if task == "re":
        from .relations_data import re_rows

        return re_rows(list(datasets))
    raise ValueError(f"unknown task {task!r}")


def entity_types(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({t[2:] for r in rows for t in r["tags"] if t != "O"})
