"""The QA benchmarks a run scores after every round (`evaluate.qa-benchmarks`), so accuracy per round sits beside the
training loss in metrics.jsonl, the experiment's table, CSV and plot.

Each entry `<name>:<size>` is the seeded, stratified sample `eval.py --datasets <name> --limit <size>` scores (same
seed, 2024), drawn once per process; every round scores the same questions. Scoring is eval's own
(`evaluate_qa_dataset_modes`): generate (FlowerTune's protocol and number, unparseable answers counted as wrong) and
loglik from one forward pass per batch when that is exact, else one after the other.

The rules checked before any work (`benchmark_problems`, applied by run_config.load_settings): instruction tuning
only, server-side evaluation on, every name a bundled benchmark or an existing file, and no bundled training data in a
prompt format other than the one eval scores.
"""

from __future__ import annotations

import os
from typing import Any

from ..data.instruct import BUNDLED_INSTRUCT
from ..data.qa_benchmarks import BUNDLED, SAMPLE_SEED, QADataset, load_qa_dataset
from ..settings import Settings

KEY = "evaluate.qa-benchmarks"
MODES = ("generate", "loglik")


def benchmark_problems(settings: Settings) -> list[str]:
    """What stops `evaluate.qa-benchmarks` from meaning what it says, one message per problem."""
    entries = settings.qa_benchmarks
    if not entries:
        return []
    value = f"key '{KEY}' = {settings.evaluate.qa_benchmarks!r}"
    problems = []
    if settings.data.task != "instruct":
        problems.append(f"{value}: QA benchmarks score instruction-tuned models; data.task is "
                        f"{settings.data.task!r} (set it to \"instruct\" or leave {KEY} empty)")
    if not settings.evaluate.server:
        problems.append(f"{value}: the server scores them after every round, but evaluate.server is false")
    for name, _ in entries:
        if name not in BUNDLED and not os.path.isfile(os.path.expanduser(name)):
            problems.append(f"{value}: {name!r} is neither a bundled benchmark ({', '.join(BUNDLED)}) nor a file")
    other_format = [d for d in settings.datasets if BUNDLED_INSTRUCT.get(d, "wrapper") != "wrapper"]
    if other_format and settings.data.task == "instruct":
        problems.append(f"key 'data.datasets' = {settings.data.datasets!r}: {', '.join(other_format)} is written in "
                        f"Alpaca's prompt format, but {KEY} scores FlowerTune's question/answer wrapper; train in "
                        "the format eval scores (medquad_flowertune, pubmedqa_pool) or leave the key empty")
    return problems


class QASuite:
    """The benchmark samples of a run, loaded once; `score` rates whatever adapter the model holds."""

    def __init__(self, datasets: list[QADataset], batch_size: int):
        self.datasets = datasets
        self.batch_size = batch_size

    @classmethod
    def from_settings(cls, settings: Settings) -> "QASuite":
        datasets = [load_qa_dataset(name).sample(size or None, SAMPLE_SEED) for name, size in settings.qa_benchmarks]
        return cls(datasets, settings.evaluate.batch_size)

    def score(self, model: Any, tokenizer: Any) -> dict[str, dict[str, float]]:
        """Per benchmark: generate and loglik accuracy, unparseable generations, questions, seconds; with several
        benchmarks also their unweighted `mean` (the leaderboard's way of averaging)."""
        from .scoring import evaluate_qa_dataset_modes  # torch: only when scoring, not when checking settings

        was_training = model.training
        model.eval()  # no LoRA dropout while scoring
        try:
            scores = {}
            for dataset in self.datasets:
                results = evaluate_qa_dataset_modes(model, tokenizer, dataset, MODES, batch_size=self.batch_size,
                                                    progress=False)
                generate, loglik = results["generate"], results["loglik"]
                scores[dataset.name] = {"generate-accuracy": generate.accuracy, "loglik-accuracy": loglik.accuracy,
                                        "unparseable": float(generate.unparseable), "questions": float(generate.total),
                                        "seconds": generate.seconds if generate.shared_pass
                                        else generate.seconds + loglik.seconds}
        finally:
            if was_training:
                model.train()
        if len(scores) > 1:
            scores["mean"] = {metric: sum(s[metric] for s in scores.values()) / len(scores)
                              for metric in ("generate-accuracy", "loglik-accuracy")}
        return scores
