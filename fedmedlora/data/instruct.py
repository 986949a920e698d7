"""Instruction-tuning rows (`prompt`, `completion`): bundled MedQuAD and PubMedQA questions, users' JSONL files and
Hugging Face datasets.

A bundled dataset's rows are written in one prompt format: Alpaca's (`medquad`, data/prompts.py, as FlowerTune's
medical baseline formats instruction data) or the question/answer wrapper FlowerTune's medical eval prompts with
(`medquad_flowertune`, `pubmedqa_pool`, data/qa_prompts.py). A model meant to be scored by that eval must be trained
in its format: the FlowerTune seed trained in Alpaca's and was scored in the wrapper. `pubmedqa_pool` rows are
PubMedQA's 500 labelled questions outside its test split, each prompted exactly as eval prompts a test question and
answered with the gold word (yes, no or maybe).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Callable

from fedmedlora_data import data_path

from .files import DataFormatError, missing_file, read_jsonl, source_name, user_path
from .prompts import instruction_prompt
from .qa_benchmarks import load_pubmedqa_pool
from .qa_prompts import PROTOCOLS, wrap

# Bundled instruction datasets and the prompt format of their rows ("alpaca" or FlowerTune's QA "wrapper").
BUNDLED_INSTRUCT = {"medquad": "alpaca", "medquad_flowertune": "wrapper", "pubmedqa_pool": "wrapper"}


def _medquad_rows(prompt: Callable[[str], str]) -> list[dict[str, Any]]:
    rows = []
    with gzip.open(data_path("instruct", "medquad", "medquad.jsonl.gz"), "rt", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            rows.append({
                "uid": f"medquad/{r['id']}",
                "source": r["source"],
                "qtype": r["qtype"],
                "prompt": prompt(r["question"]),
                "completion": r["answer"],
            })
    return rows


def _pubmedqa_pool_rows() -> list[dict[str, Any]]:
    """Eval's own prompt for each pool question, its gold word as the completion; `answer` for dirichlet sites."""
    protocol = PROTOCOLS["pubmedqa"]
    return [{"uid": f"pubmedqa_pool/{item.id}", "source": "pubmedqa", "answer": item.options[item.gold],
             "prompt": protocol.prompt(item), "completion": protocol.answer_text(item, item.gold)}
            for item in load_pubmedqa_pool().items]


BUNDLED_ROWS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "medquad": lambda: _medquad_rows(instruction_prompt),
    "medquad_flowertune": lambda: _medquad_rows(lambda question: wrap(f"{question.strip()}\n")),
    "pubmedqa_pool": _pubmedqa_pool_rows,
}


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
        if name in BUNDLED_ROWS:
            rows.extend(BUNDLED_ROWS[name]())
            continue
        path = user_path(name)
        if path is not None:
            if not path.is_file():
                raise missing_file(name, path)
            rows.extend(_jsonl_instruct_rows(path, source_name(path)))
        else:
            rows.extend(_hub_instruct_rows(name))
    return rows
