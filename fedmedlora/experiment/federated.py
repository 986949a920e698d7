"""The experiment's federated settings: each strategy as one real `fedmedlora run` (a private Flower simulation).

The experiment's resolved run config, with only `strategy.name`, `run.results-dir` (the experiment's `runs/`) and
`run.name` (`federated-<strategy>`) replaced, is written to `runs/federated-<strategy>.toml` and handed to the
launcher, so the simulation validates and runs exactly what the baselines ran with. Its output goes to the terminal
and to `runs/federated-<strategy>.log`. Afterwards its `metrics.jsonl` (server-side evaluation of the global adapter
after every round, per site and pooled, by the same `job.evaluate`) becomes a `ModelResult`; a run that failed keeps
the rounds it recorded.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ..launch.launcher import run as launch
from ..recorder import read_metrics
from ..run_state import inspect_run
from ..settings import write_flat_toml
from .report import ModelResult, RoundScores, set_aside


class _Tee:
    """A text stream writing to several (the launcher streams the simulation's output to one)."""

    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def run_name(strategy: str) -> str:
    return f"federated-{strategy}"


def federated_config(config: dict[str, Any], strategy: str, runs_dir: Path) -> dict[str, Any]:
    return {**config, "strategy.name": strategy, "run.results-dir": str(Path(runs_dir).resolve()),
            "run.name": run_name(strategy)}


def read_federated_run(run_dir: Path, strategy: str, site_names: list[str], *, exit_code: int,
                       wall_seconds: float) -> ModelResult:
    """The run's per-round server-side scores, with sites renamed from their index to the baselines' names."""
    result = ModelResult("federated", strategy, wall_seconds=wall_seconds, run_dir=f"runs/{run_dir.name}")
    sites_file = run_dir / "sites.json"
    if sites_file.is_file():
        names = [entry["name"] for entry in json.loads(sites_file.read_text())]
        if names != list(site_names):  # same settings must give the same sites; anything else is not comparable
            result.status = f"failed: the federation's sites {names} differ from the baselines' {list(site_names)}"
            return result
    if (run_dir / "metrics.jsonl").is_file():
        for record in read_metrics(run_dir):
            evaluation = record.get("server-eval")
            if evaluation is not None:
                result.rounds.append(RoundScores(
                    int(record["round"]), dict(evaluation["pooled"]),
                    {site_names[int(k)]: dict(v) for k, v in evaluation["sites"].items()},
                    dict(evaluation.get("benchmarks", {}))))
    if exit_code != 0:
        result.status = f"failed: fedmedlora run exited with code {exit_code}; see runs/{run_dir.name}.log"
    elif not result.rounds:
        result.status = "failed: the run recorded no server-side evaluation"
    return result


def run_federated(app_dir: Path, config: dict[str, Any], strategy: str, runs_dir: Path,
                  site_names: list[str], *, resume: bool = False) -> ModelResult:
    """One strategy through `fedmedlora run`; returns its scores per round (whatever it recorded if it failed).
    With `resume`, a stopped run of this strategy in `runs_dir` continues from its saved state (`run.resume`); a
    leftover folder that cannot continue is set aside."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    name = run_name(strategy)
    config = federated_config(config, strategy, runs_dir)
    continuing = False
    if resume and (runs_dir / name).exists():
        folder = inspect_run(runs_dir / name)
        continuing = folder.status == "unfinished" and folder.state_round is not None
        if continuing:
            config["run.resume"] = True
            print(f"[experiment] federated {strategy}: continuing {folder.describe()}", flush=True)
        else:
            set_aside(runs_dir / name)
    config_file = runs_dir / f"{name}.toml"
    write_flat_toml(config, config_file)
    print(f"[experiment] federated {strategy}: fedmedlora run --run-config {config_file}", flush=True)
    start = time.perf_counter()
    with open(runs_dir / f"{name}.log", "a" if continuing else "w", encoding="utf-8") as log:
        code = launch(str(app_dir), [str(config_file)], stream_to=_Tee(sys.stdout, log))
    wall = time.perf_counter() - start
    return read_federated_run(runs_dir / name, strategy, site_names, exit_code=code, wall_seconds=wall)
