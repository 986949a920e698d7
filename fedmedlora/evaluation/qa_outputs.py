"""The files a QA evaluation leaves in its output folder, written so nothing finished is lost to a later failure:

    acc_<dataset>_<run>.txt            "Accuracy: <fraction>. ", FlowerTune's name and content (atomic)
    generation_<dataset>_<run>.jsonl   one line per question: prompt, gold, prediction, raw generation, ...
                                       appended batch by batch to `<name>.partial`, renamed when the dataset is done
    summary.json                       every dataset scored into this folder: accuracy, counts, answer
                                       distributions, mode, model, the sample's seed and ids (--limit); the
                                       average over all, and FlowerTune's leaderboard average (PubMedQA, MedMCQA,
                                       MedQA, CareQA) once all four are in; rewritten (atomically) after each dataset

Re-running with the same run name replaces that dataset's files and its summary entry, and keeps the others, so
datasets can be scored in separate invocations as with FlowerTune.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TextIO

from ..data.qa_benchmarks import LEADERBOARD
from ..recorder import write_text_atomic


class GenerationsFile:
    """Appends JSONL records as they come; the final name appears only once the dataset finished."""

    def __init__(self, path: Path):
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self._fh: TextIO | None = None

    def __enter__(self) -> "GenerationsFile":
        self._fh = self.partial.open("w", encoding="utf-8")
        return self

    def write(self, records: list[dict[str, Any]]) -> None:
        assert self._fh is not None, "use GenerationsFile as a context manager"
        for record in records:
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._fh is not None
        self._fh.close()
        if exc_type is None:
            os.replace(self.partial, self.path)
        # On failure the .partial file stays, holding every batch that finished.


class QAOutputs:
    def __init__(self, out_dir: str | os.PathLike[str], run_name: str):
        self.dir = Path(out_dir)
        self.run_name = run_name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.summary_path = self.dir / "summary.json"

    def accuracy_path(self, dataset: str) -> Path:
        return self.dir / f"acc_{dataset}_{self.run_name}.txt"

    def generations_path(self, dataset: str) -> Path:
        return self.dir / f"generation_{dataset}_{self.run_name}.jsonl"

    def generations(self, dataset: str) -> GenerationsFile:
        return GenerationsFile(self.generations_path(dataset))

    def write_accuracy(self, dataset: str, accuracy: float) -> Path:
        path = self.accuracy_path(dataset)
        write_text_atomic(path, f"Accuracy: {accuracy}. ")
        return path

    def read_summary(self) -> dict[str, Any]:
        if not self.summary_path.exists():
            return {}
        try:
            summary = json.loads(self.summary_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return {}  # a foreign or damaged file: start afresh rather than refuse to save this run's numbers
        return summary if isinstance(summary, dict) else {}

    def update_summary(self, run: dict[str, Any], dataset: str | None = None,
                       result: dict[str, Any] | None = None) -> dict[str, Any]:
        """Merge this invocation's settings and one dataset's result into summary.json; returns the new summary."""
        summary = self.read_summary()
        datasets = summary.get("datasets") if isinstance(summary.get("datasets"), dict) else {}
        if dataset is not None and result is not None:
            datasets[dataset] = result
        accuracies = [entry["accuracy"] for entry in datasets.values() if "accuracy" in entry]
        summary = {
            **run,
            "run_name": self.run_name,
            "datasets": datasets,
            "average_accuracy": sum(accuracies) / len(accuracies) if accuracies else None,
            **leaderboard_average(datasets),
        }
        write_text_atomic(self.summary_path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return summary


def leaderboard_average(datasets: dict[str, Any]) -> dict[str, Any]:
    """FlowerTune's medical leaderboard figure: the mean accuracy over its four datasets, once all four are scored
    in one mode (None before, with the missing ones named); `sampled` says whether any was a --limit sample."""
    entries = [datasets.get(name) for name in LEADERBOARD]
    missing = [name for name, entry in zip(LEADERBOARD, entries) if not entry or "accuracy" not in entry]
    modes = {entry.get("mode") for entry in entries if entry}
    average = None
    if not missing and len(modes) == 1:
        average = sum(entry["accuracy"] for entry in entries) / len(LEADERBOARD)
    return {"leaderboard_average": average, "leaderboard_datasets": list(LEADERBOARD),
            "leaderboard_missing": missing,
            "leaderboard_sampled": any(entry.get("sample") for entry in entries if entry)}
