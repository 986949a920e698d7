"""`fedmedlora run` (SuperLink, Ray, ServerApp, ClientApps) with its ServerApp killed by PID once round 1 of 3 is
saved, then `fedmedlora run --resume RUN_DIR`: the launcher says the run was interrupted and how to resume it,
metrics.jsonl ends with rounds 0..3 once each, and the final adapter is bit for bit the one of a run never stopped
(computed in process with one torch thread, as the Ray workers here run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedmedlora.launch.grid import run_in_process
from fedmedlora.recorder import read_metrics
from fedmedlora.run_state import inspect_run, state_rounds

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

RUN = {"num-server-rounds": 3, "data.num-sites": 2, "data.max-train-examples": 24, "data.max-eval-examples": 8,
       "data.max-length": 48, "train.local-steps": 2, "train.batch-size": 8}


def fedmedlora_run(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fedmedlora.cli", "run", str(ROOT), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        raise AssertionError(f"fedmedlora run did not end within {timeout:.0f} s:\n{out[-4000:]}")
    return proc.returncode, out


def test_a_killed_serverapp_resumes_to_the_adapter_of_an_unbroken_run(tmp_path: Path) -> None:
    import torch

    run_dir = tmp_path / "killed"
    pairs = " ".join(f"{k}={v}" for k, v in RUN.items())
    proc = fedmedlora_run("-c", pairs, "-c", f'run.results-dir="{tmp_path}" run.name="killed"', cwd=tmp_path)
    deadline = time.time() + 600
    try:
        # round 1's resume state, not its metrics line: the state is written after the line (a kill in between
        # replays round 1, by design), so waiting on the line made the resume point a race
        while not [k for k in state_rounds(run_dir) if k >= 1]:
            assert proc.poll() is None and time.time() < deadline, "round 1 never ended"
            time.sleep(0.1)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "running"
        os.kill(summary["pid"], signal.SIGKILL)  # the ServerApp, as a crash or an OOM killer would
        code, out = finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    assert code != 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["resume"] == f"fedmedlora run --resume {run_dir}"
    assert f"resume it with `fedmedlora run --resume {run_dir}`" in out
    done = inspect_run(run_dir).state_round  # 1, or 2 if round 2 ended before the kill landed
    assert done in (1, 2)

    code, out = finish(fedmedlora_run("--resume", str(run_dir), cwd=tmp_path))
    assert code == 0, out[-4000:]
    assert f"resuming killed after round {done} of 3" in out
    records = read_metrics(run_dir)
    assert [r["round"] for r in records] == [0, 1, 2, 3]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed-from"] == [done]
    assert (run_dir / "superlink.log").exists() and (run_dir / "superlink.1.log").exists()  # both attempts' logs

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = Path(run_in_process({**RUN, "run.results-dir": str(tmp_path), "run.name": "whole"})["run-dir"])
    finally:
        torch.set_num_threads(threads)
    final, expected = load_file(str(run_dir / "peft_3" / "adapter_model.safetensors")), load_file(
        str(whole / "peft_3" / "adapter_model.safetensors"))
    assert final.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(final[key], expected[key], err_msg=key)
    assert [r["comm"]["total-sent-mib"] for r in records] == [r["comm"]["total-sent-mib"]
                                                              for r in read_metrics(whole)]
