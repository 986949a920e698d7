"""`fedmedlora run` refuses a run folder that holds results before Flower starts, and says how to resume it;
`--resume RUN_DIR` takes the run config the run started with and refuses changes that would make it another run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fedmedlora.launch.launcher import mark_interrupted, run
from fedmedlora.run_config import load_settings
from fedmedlora.run_state import RunLock

ROOT = Path(__file__).resolve().parents[1]


def stopped_run(tmp_path: Path, status: str = "running") -> Path:
    """A folder as a ServerApp killed after round 0 leaves it (its state need not be real: Flower never starts)."""
    run_dir = tmp_path / "stopped"
    (run_dir / "state").mkdir(parents=True)
    config = load_settings({"run.name": "stopped", "run.results-dir": str(tmp_path)}).as_dict()
    (run_dir / "config.json").write_text(json.dumps({"run-config": config}))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"round": 0}) + "\n")
    (run_dir / "state" / "round_0.json").write_text("{}")
    (run_dir / "summary.json").write_text(json.dumps({"status": status, "pid": 1}))
    return run_dir


def launch(capsys: pytest.CaptureFixture, *args: str, resume: str = "") -> tuple[int, str]:
    start = time.time()
    code = run(str(ROOT), list(args), resume=resume)
    assert time.time() - start < 30  # refused before any SuperLink or model work
    return code, capsys.readouterr().err


def test_an_unfinished_run_is_refused_with_the_command_that_resumes_it(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    run_dir = stopped_run(tmp_path)
    code, err = launch(capsys, f'run.name="stopped" run.results-dir="{tmp_path}"')
    assert code == 2
    assert (f"{run_dir} holds an unfinished run (summary status 'running', rounds 0..0 recorded, resumable after "
            f"round 0): resume it with `fedmedlora run --resume {run_dir}`") in err


def test_resume_refuses_another_run_config_and_a_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = stopped_run(tmp_path)
    code, err = launch(capsys, "train.local-steps=5", resume=str(run_dir))
    assert code == 2 and "key 'train.local-steps' = 5, but the run started with 30" in err
    code, err = launch(capsys, resume=str(tmp_path / "never-ran"))
    assert code == 2 and "no run to resume there" in err
    (run_dir / "summary.json").write_text(json.dumps({"status": "completed"}))
    code, err = launch(capsys, resume=str(run_dir))
    assert code == 2 and "holds a completed run" in err


def test_a_dead_serverapps_run_is_marked_interrupted_a_live_ones_is_not(tmp_path: Path) -> None:
    run_dir = stopped_run(tmp_path)
    with RunLock(run_dir):  # a ServerApp still holds the folder
        mark_interrupted(run_dir)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    mark_interrupted(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["resume"] == f"fedmedlora run --resume {run_dir}"
