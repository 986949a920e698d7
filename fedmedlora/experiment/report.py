"""What an experiment writes: `table.md`, `results.csv` and `f1_per_round.png` from the models scored so far, and
`accuracy_per_round.png` when the run scores QA benchmarks (`evaluate.qa-benchmarks`).

Every model (zero-shot, one single-site model per site, centralized, one federated model per strategy) is a
`ModelResult`: its scores after each round on each site's evaluation split and on the pooled split. `write_report`
rewrites all three files from the whole list, each atomically (temp file + os.replace), so the experiment calls it
after every model and a failure later leaves complete files for the models already done.
`python -m fedmedlora.experiment.report <folder>` redraws a folder's plots from its results.csv.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..recorder import write_text_atomic

POOLED = "pooled"
# Strict and lenient F1: the scores the study compares (every other score goes to results.csv).
TABLE_METRICS = ("strict-f1", "lenient-f1")
CSV_COLUMNS = ("setting", "model", "eval_site", "metric", "value", "round")
MODELS_FILE = "models.json"
# Per QA benchmark in the table: FlowerTune's generate accuracy, the loglik accuracy, unparseable generations.
BENCHMARK_METRICS = (("generate-accuracy", "acc"), ("loglik-accuracy", "loglik acc"), ("unparseable", "unparseable"))


@dataclass
class RoundScores:
    """Scores of one model after `round` rounds (0: the initial adapter), per evaluation site and pooled."""

    round: int
    pooled: dict[str, float]
    sites: dict[str, dict[str, float]]  # keyed by site name, in site order
    benchmarks: dict[str, dict[str, float]] = field(default_factory=dict)  # QA benchmark -> accuracies (+ "mean")


@dataclass
class ModelResult:
    setting: str  # zero-shot | single-site | centralized | federated
    model: str  # what was trained: "-" (zero-shot), a site name, "all sites pooled", a strategy name
    rounds: list[RoundScores] = field(default_factory=list)
    wall_seconds: float = 0.0
    status: str = "completed"  # or "failed: <why>"
    run_dir: str = ""  # raw records, relative to the experiment folder

    @property
    def final(self) -> RoundScores | None:
        return self.rounds[-1] if self.rounds else None


def table_metrics(primary: str, available: Sequence[str]) -> list[str]:
    """The table's columns per evaluation site: the task's headline and, for a strict score, its lenient twin
    (NER: strict-f1, lenient-f1; RE: typed-strict-micro-f1, typed-lenient-micro-f1); otherwise the headline then
    strict-f1 and lenient-f1 where the task has them."""
    wanted = [primary, primary.replace("strict", "lenient")] if "strict" in primary else [primary, *TABLE_METRICS]
    chosen = [m for i, m in enumerate(wanted) if m in available and m not in wanted[:i]]
    return chosen or [primary]


def _available_metrics(results: Sequence[ModelResult]) -> list[str]:
    for result in results:
        if result.final is not None:
            return list(result.final.pooled)
    return []


def _benchmark_names(results: Sequence[ModelResult]) -> list[str]:
    for result in results:
        if result.final is not None and result.final.benchmarks:
            return list(result.final.benchmarks)
    return []


def _fmt(value: Any, metric: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.0f}" if metric == "unparseable" else f"{value:.4f}"


def markdown_table(results: Sequence[ModelResult], site_names: Sequence[str], primary: str) -> str:
    """One row per model (final round), columns: each table metric on each site and pooled, each QA benchmark's
    accuracies; rounds; wall time."""
    metrics = table_metrics(primary, _available_metrics(results))
    targets = [*site_names, POOLED]
    benchmarks = [(b, m, label) for b in _benchmark_names(results) for m, label in BENCHMARK_METRICS
                  if b != "mean" or m != "unparseable"]
    head = ["setting", "model", *(f"{t} {m}" for t in targets for m in metrics),
            *(f"{b} {label}" for b, _, label in benchmarks), "rounds", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for r in results:
        final = r.final
        cells = [r.setting, r.model if r.status == "completed" else f"{r.model} ({r.status})"]
        for target in targets:
            scores = {} if final is None else (final.pooled if target == POOLED else final.sites.get(target, {}))
            cells.extend(_fmt(scores.get(m)) for m in metrics)
        for benchmark, metric, _ in benchmarks:
            cells.append(_fmt(None if final is None else final.benchmarks.get(benchmark, {}).get(metric), metric))
        cells.append(str(final.round) if final is not None else "-")
        cells.append(f"{r.wall_seconds:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_rows(results: Sequence[ModelResult]) -> list[tuple[Any, ...]]:
    """Long format: every numeric score of every model, round and evaluation site (sites, then pooled, then QA
    benchmarks by name)."""
    rows = []
    for r in results:
        for scores in r.rounds:
            for target, metrics in [*scores.sites.items(), (POOLED, scores.pooled), *scores.benchmarks.items()]:
                for metric, value in metrics.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        rows.append((r.setting, r.model, target, metric, repr(float(value)), scores.round))
    return rows


def write_csv(path: Path, results: Sequence[ModelResult]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_rows(results))
    write_text_atomic(path, buffer.getvalue())


def read_csv(path: Path, site_names: Sequence[str]) -> list[ModelResult]:
    """`results.csv` back into models (the inverse of `write_csv`, for re-plotting): an `eval_site` that is neither a
    site nor pooled is a QA benchmark. Wall time and failure status are not in the CSV (table.md keeps them)."""
    models: dict[tuple[str, str], dict[int, RoundScores]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            rounds = models.setdefault((row["setting"], row["model"]), {})
            n = int(row["round"])
            scores = rounds.setdefault(n, RoundScores(n, {}, {name: {} for name in site_names}))
            target = row["eval_site"]
            bucket = (scores.pooled if target == POOLED else scores.sites[target] if target in scores.sites
                      else scores.benchmarks.setdefault(target, {}))
            bucket[row["metric"]] = float(row["value"])
    return [ModelResult(setting, model, rounds=[rounds[n] for n in sorted(rounds)])
            for (setting, model), rounds in models.items()]


def write_models(path: Path, results: Sequence[ModelResult]) -> None:
    """models.json: what results.csv does not hold of each model (status, wall time, raw records), so a resumed
    experiment knows which models are done."""
    import json

    write_text_atomic(path, json.dumps([{"setting": r.setting, "model": r.model, "status": r.status,
                                          "wall-seconds": r.wall_seconds, "run-dir": r.run_dir} for r in results],
                                        indent=2) + "\n")


def _models_from_table(path: Path) -> list[dict[str, Any]]:
    """models.json's facts from table.md's rows (setting, model, ..., rounds, wall s), for folders written before
    models.json existed."""
    models = []
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or len(cells) < 4 or cells[0] in ("setting", "---"):
            continue
        model, _, failure = cells[1].partition(" (failed")
        models.append({"setting": cells[0], "model": model, "wall-seconds": float(cells[-1]),
                       "status": f"failed{failure[:-1]}" if failure else "completed", "run-dir": ""})
    return models


def recorded_models(out_dir: Path, site_names: Sequence[str]) -> list[ModelResult]:
    """The models an experiment folder records, with their scores (results.csv) and facts (models.json, or table.md
    for older folders), in the order they were written."""
    import json

    out_dir = Path(out_dir)
    models_file = out_dir / MODELS_FILE
    if models_file.is_file():
        facts = json.loads(models_file.read_text(encoding="utf-8"))
    elif (out_dir / "table.md").is_file():
        facts = _models_from_table(out_dir / "table.md")
    else:
        return []
    scores = {(r.setting, r.model): r for r in read_csv(out_dir / "results.csv", site_names)} \
        if (out_dir / "results.csv").is_file() else {}
    models = []
    for f in facts:
        scored = scores.get((f["setting"], f["model"]))
        models.append(ModelResult(f["setting"], f["model"], scored.rounds if scored else [],
                                  wall_seconds=float(f["wall-seconds"]), status=f["status"],
                                  run_dir=f.get("run-dir", "")))
    return models


def set_aside(path: Path) -> Path | None:
    """Move a leftover folder (and its .log/.toml) of a model that runs again to `<name>.failed-<n>`: a rerun
    never writes over what an earlier attempt left. Returns the new name, None when there was nothing."""
    path = Path(path)
    if not path.exists():
        return None
    n = 1
    while path.with_name(f"{path.name}.failed-{n}").exists():
        n += 1
    target = path.with_name(f"{path.name}.failed-{n}")
    os.replace(path, target)
    for suffix in (".log", ".toml"):
        sibling = path.with_name(path.name + suffix)
        if sibling.exists():
            os.replace(sibling, target.with_name(target.name + suffix))
    return target


def replot(out_dir: Path) -> list[Path]:
    """Redraw an experiment folder's plots from its results.csv and config.json (after a change to the plots)."""
    import json

    out_dir = Path(out_dir)
    config = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    results = read_csv(out_dir / "results.csv", [site["name"] for site in config["sites"]])
    run_config = config["run-config"]
    return write_plots(out_dir, results, config["primary-metric"],
                       plot_title(config["name"], run_config["data.task"], run_config["model.name"]),
                       int(run_config["num-server-rounds"]))


def plot_title(name: str, task: str, model: str) -> str:
    return f"{name}: {task}, {model}"


def _line_label(r: ModelResult) -> str:
    if r.setting == "single-site":
        return f"single-site ({r.model})"
    if r.setting == "federated":
        return f"federated {r.model}"
    return r.setting


def _plot_rounds(ax: Any, r: ModelResult, points: list[tuple[int, float]], rounds: int) -> None:
    """One model's score per round: a line, or the zero-shot model's single score as a dashed level."""
    if not points:
        return
    if r.setting == "zero-shot":
        ax.hlines(points[-1][1], 0, max(rounds, 1), colors="grey", linestyles="--", label="zero-shot")
        return
    xs, ys = zip(*points)
    ax.plot(xs, ys, marker="o", label=_line_label(r) + ("" if r.status == "completed" else " (failed)"))


def plotted_metrics(results: Sequence[ModelResult], primary: str) -> list[str]:
    """The panels of f1_per_round.png: the headline score and, when it is not the loss, the pooled test loss beside
    it (a generative model's F1 can dip in a round its loss still falls)."""
    available = set(_available_metrics(results))
    return [primary, *(["loss"] if primary != "loss" and "loss" in available else [])]


def write_plot(path: Path, results: Sequence[ModelResult], primary: str, title: str, rounds: int) -> None:
    """Pooled headline score (and test loss) per round, one line per model; zero-shot as a dashed level (it is not
    trained)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    metrics = plotted_metrics(results, primary)
    fig, axes = plt.subplots(1, len(metrics), figsize=(7.5 * len(metrics) ** 0.8, 4.5), dpi=120, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for r in results:
            points = [(s.round, s.pooled.get(metric)) for s in r.rounds if s.pooled.get(metric) is not None]
            _plot_rounds(ax, r, points, rounds)
        ax.set_xlabel("round")
        ax.set_ylabel(f"{metric} (pooled)")
        ax.set_xticks(range(0, max(rounds, 1) + 1))
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=8, loc="best")
    _save_figure(fig, path, title)


def _save_figure(fig: Any, path: Path, title: str) -> None:
    """Title, layout and an atomic PNG: a plot is the old one or the new one, never half written."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def write_accuracy_plot(path: Path, results: Sequence[ModelResult], title: str, rounds: int) -> None:
    """QA accuracy per round, generate (FlowerTune's) and loglik side by side, one line per model: the mean over the
    benchmarks when there are several."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _benchmark_names(results)
    shown = "mean" if "mean" in names else names[0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120, sharey=True)
    for ax, (metric, label) in zip(axes, BENCHMARK_METRICS[:2]):
        for r in results:
            points = [(s.round, s.benchmarks[shown][metric]) for s in r.rounds if metric in s.benchmarks.get(shown, {})]
            _plot_rounds(ax, r, points, rounds)
        ax.set_xlabel("round")
        ax.set_title(f"{shown} {label} ({metric.split('-')[0]})", fontsize=10)
        ax.set_xticks(range(0, max(rounds, 1) + 1))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7, loc="best")
    _save_figure(fig, path, title)


def write_report(out_dir: Path, results: Sequence[ModelResult], *, site_names: Sequence[str], primary: str,
                 header: str, title: str, rounds: int) -> None:
    """Rewrite table.md (header + table), results.csv, models.json and f1_per_round.png (and accuracy_per_round.png
    with QA benchmarks) from every model scored so far."""
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "table.md", header.rstrip() + "\n\n" + markdown_table(results, site_names, primary))
    write_csv(out_dir / "results.csv", results)
    write_models(out_dir / MODELS_FILE, results)
    write_plots(out_dir, results, primary, title, rounds)


def write_plots(out_dir: Path, results: Sequence[ModelResult], primary: str, title: str, rounds: int) -> list[Path]:
    """f1_per_round.png, and accuracy_per_round.png when the models were scored on QA benchmarks; the paths written."""
    written = [Path(out_dir) / "f1_per_round.png"]
    write_plot(written[0], results, primary, title, rounds)
    if _benchmark_names(results):
        written.append(Path(out_dir) / "accuracy_per_round.png")
        write_accuracy_plot(written[-1], results, title, rounds)
    return written


if __name__ == "__main__":  # python -m fedmedlora.experiment.report <experiment folder>...
    import sys

    for folder in sys.argv[1:]:
        for written_path in replot(Path(folder)):
            print(written_path)
