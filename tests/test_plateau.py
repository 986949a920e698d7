"""Stopping at a plateau: the rule by hand, and a run that stops early, completed, with its last checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedmedlora.run_config import load_settings
from fedmedlora.scoring.plateau import plateaued
from fedmedlora.settings import ConfigError


def test_the_rule() -> None:
    # round 0, then rounds 1..: 0.10 0.50 0.60 | 0.602 0.601 0.6025: the last 3 beat 0.60 by 0.0025
    scores = [0.0, 0.10, 0.50, 0.60, 0.602, 0.601, 0.6025]
    assert plateaued(scores, rounds=3, delta=0.003)
    assert not plateaued(scores, rounds=3, delta=0.002)
    assert not plateaued(scores[:-1], rounds=3, delta=0.003)  # 0.60 is within the last 3: rose by 0.50
    assert not plateaued([0.0, 0.5, 0.5], rounds=3, delta=0.003)  # too few rounds to say
    assert plateaued([0.0, 0.5, 0.4], rounds=1, delta=0.0)  # a drop is not an improvement
    assert not plateaued(scores, rounds=0, delta=1.0)  # off


def test_needs_the_server_side_evaluation() -> None:
    with pytest.raises(ConfigError, match="set evaluate.server = true"):
        load_settings({"evaluate.plateau-rounds": 3, "evaluate.server": False})


@pytest.mark.slow
def test_a_run_stops_at_its_plateau(tmp_path: Path) -> None:
    from fedmedlora.launch.grid import run_in_process
    from fedmedlora.recorder import read_metrics

    config = {"data.max-train-examples": 32, "data.max-eval-examples": 8, "train.local-steps": 1,
              "num-server-rounds": 6, "data.num-sites": 2, "train.batch-size": 8, "data.max-length": 64,
              "evaluate.plateau-rounds": 1, "evaluate.plateau-delta": 1.0, "evaluate.checkpoint-every": 0,
              "run.results-dir": str(tmp_path), "run.name": "run"}
    result = run_in_process(config)
    run_dir = Path(result["run-dir"])
    records = read_metrics(run_dir)
    assert [r["round"] for r in records] == [0, 1, 2]  # any round 2 is within 1.0 of the best before it
    assert records[-1]["plateau"]["round"] == 2 and records[-1]["checkpoint"] == "peft_2"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["stopped-at-plateau"]["round"] == 2
    assert summary["rounds-completed"] == 2


@pytest.mark.slow
def test_a_baseline_stops_at_its_plateau_too(tmp_path: Path) -> None:
    from fedmedlora.experiment.baselines import Baselines
    from fedmedlora.job import get_job
    from fedmedlora.recorder import read_metrics

    settings = load_settings({"data.max-train-examples": 32, "data.max-eval-examples": 8, "train.local-steps": 1,
                              "num-server-rounds": 5, "data.num-sites": 2, "train.batch-size": 8,
                              "data.max-length": 64, "evaluate.plateau-rounds": 1, "evaluate.plateau-delta": 1.0})
    result = Baselines(get_job(settings), tmp_path, log=lambda line: None).centralized()
    assert [r.round for r in result.rounds] == [0, 1, 2]
    assert [r["round"] for r in read_metrics(tmp_path / "centralized")] == [0, 1, 2]
    assert (tmp_path / "centralized" / "peft_2" / "adapter_model.safetensors").exists()
