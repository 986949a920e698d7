"""Crash-safe, resumable runs in process (the real ServerApp and ClientApp code): a run stopped after round 1 and
resumed ends with the same adapter, bit for bit, as a run never stopped, for strategies with and without server
state; metrics.jsonl holds every round once; folders that hold results are never reused without being asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedmedlora.launch.grid import InProcessGrid, run_in_process
from fedmedlora.recorder import read_metrics
from fedmedlora.run_state import inspect_run, state_rounds

pytestmark = pytest.mark.slow

TINY = {"num-server-rounds": 3, "data.num-sites": 2, "data.max-train-examples": 32, "data.max-eval-examples": 8,
        "data.max-length": 48, "train.local-steps": 2, "train.batch-size": 8,
        # a schedule that changes every round: a resumed run must pick up the right learning rate
        "train.learning-rate-max": 5e-3, "train.learning-rate-min": 1e-3}
# Per-round facts that must not depend on whether the run was stopped (timings and paths may).
SAME = ("round", "replies", "usable", "failures", "total-failures", "aggregated", "weights", "train-nodes",
        "train-aggregated", "server-eval", "comm", "fedavgopt", "validation")
TIMING = {"seconds", "elapsed-seconds", "train-seconds", "train-runtime", "train-samples-per-second",
          "train-steps-per-second", "eval-seconds",
          # what a message cost its process (federation/process_stats.py): a resumed run starts new processes
          "pid", "process-messages", "model-loads", "model-loaded", "model-load-seconds", "model-from-cache", "startup-seconds",
          "data-seconds", "data-from-cache", "handler-seconds"}


class ServerKilled(KeyboardInterrupt):
    """A ServerApp stopped without warning: not an Exception, so nothing on the way catches it as a client error."""


def config(tmp_path: Path, name: str, **overrides: Any) -> dict[str, Any]:
    return {**TINY, "run.results-dir": str(tmp_path), "run.name": name, **overrides}


def adapter(run_dir: Path, server_round: int) -> dict[str, np.ndarray]:
    return load_file(str(run_dir / f"peft_{server_round}" / "adapter_model.safetensors"))


def without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def stop_in_round_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server dies as it sends round 2's instructions (round 1 ended: its line and state are written)."""
    real = InProcessGrid.send_and_receive

    def send_and_receive(self: InProcessGrid, messages: Any, *, timeout: float | None = None) -> Any:
        messages = list(messages)
        if any(m.content["config"].get("server-round") == 2 for m in messages):  # not the site queries
            raise ServerKilled()
        return real(self, messages, timeout=timeout)

    monkeypatch.setattr(InProcessGrid, "send_and_receive", send_and_receive)


def stopped_and_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, **overrides: Any) -> Path:
    with monkeypatch.context() as patch:
        stop_in_round_2(patch)
        with pytest.raises(ServerKilled):
            run_in_process(config(tmp_path, name, **overrides))
    run_dir = tmp_path / name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds-completed"] == 1
    assert [r["round"] for r in read_metrics(run_dir)] == [0, 1] and state_rounds(run_dir) == [0, 1]
    run_in_process(config(tmp_path, name, **{"run.resume": True}, **overrides))
    return run_dir


# FlexLoRA keeps the ranks its sites reported: a resumed run sends each site its rank's factors, as an unbroken one
# does (the same bytes on the wire, which `comm` compares)
SERVER_STATE = {"flexlora": {"lora.site-ranks": "8,2", "strategy.clients-per-round": 2}}


@pytest.mark.parametrize("strategy", ["fedavg", "fedadam", "fedavgm", "fedavgopt", "fed-medlora-plus", "flexlora"])
def test_a_resumed_run_ends_with_the_adapter_of_an_unbroken_run(strategy: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"strategy.name": strategy, "strategy.clients-per-round": 1,  # sampling draws from the restored RNG
             **SERVER_STATE.get(strategy, {})}
    whole = Path(run_in_process(config(tmp_path, "whole", **extra))["run-dir"])
    resumed = stopped_and_resumed(tmp_path, monkeypatch, "resumed", **extra)

    final = adapter(resumed, 3)
    expected = adapter(whole, 3)
    assert final.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(final[key], expected[key], err_msg=key)  # bit for bit
    assert not np.array_equal(expected[key], adapter(whole, 1)[key])  # round 1's adapter was not the answer

    records, reference = read_metrics(resumed), read_metrics(whole)
    assert [r["round"] for r in records] == [0, 1, 2, 3]  # no round lost, none twice
    for got, want in zip(records, reference):
        for key in SAME:
            assert without_timings(got.get(key)) == without_timings(want.get(key)), (got["round"], key)
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed-from"] == [1]
    assert summary["rounds-completed"] == 3 and summary["comm-total-mib"] == pytest.approx(
        json.loads((whole / "summary.json").read_text())["comm-total-mib"], rel=0, abs=1e-12)
    assert summary["strict-f1-per-round"] == [r["server-eval"]["pooled"]["strict-f1"] for r in reference]


def test_server_moments_are_what_makes_fedadam_resume_exactly(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The same stop and resume with FedAdam's moments forgotten: the adapter differs (the test above has teeth)."""
    from fedmedlora.strategies.flower import LoraFedAdam

    whole = Path(run_in_process(config(tmp_path, "whole", **{"strategy.name": "fedadam"}))["run-dir"])
    monkeypatch.setattr(LoraFedAdam, "load_state", lambda self, arrays, info: None)
    resumed = stopped_and_resumed(tmp_path, monkeypatch, "forgetful", **{"strategy.name": "fedadam"})
    final, expected = adapter(resumed, 3), adapter(whole, 3)
    assert any(not np.array_equal(final[k], expected[k]) for k in expected)


def test_a_folder_with_results_is_refused_unless_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        stop_in_round_2(patch)
        with pytest.raises(ServerKilled):
            run_in_process(config(tmp_path, "run", **{"num-server-rounds": 2}))
    run_dir = tmp_path / "run"
    before = (run_dir / "metrics.jsonl").read_bytes()
    with pytest.raises(FileExistsError, match=r"unfinished run .*rounds 0\.\.1 recorded, resumable after round 1.*"
                                              r"fedmedlora run --resume"):
        run_in_process(config(tmp_path, "run", **{"num-server-rounds": 2}))
    with pytest.raises(ValueError, match=r"key 'train.local-steps' = 3, but the run started with 2"):
        run_in_process(config(tmp_path, "run", **{"num-server-rounds": 2, "run.resume": True,
                                                  "train.local-steps": 3}))
    assert (run_dir / "metrics.jsonl").read_bytes() == before  # refused: nothing touched
    # killed after round 1's metrics line but before its state, and while writing a line: resumed after round 0,
    # metrics.jsonl cut back to round 0 (the complete line of round 1 and the half-written one dropped)
    for suffix in (".json", ".safetensors"):
        (run_dir / "state" / f"round_1{suffix}").unlink()
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write('{"round": 2, "comm": {"sent-m')
    run_in_process(config(tmp_path, "run", **{"num-server-rounds": 2, "run.resume": True}))
    assert [r["round"] for r in read_metrics(run_dir)] == [0, 1, 2]
    assert json.loads((run_dir / "summary.json").read_text())["resumed-from"] == [0]
    assert inspect_run(run_dir).status == "completed"
    with pytest.raises(FileExistsError, match="holds a completed run"):
        run_in_process(config(tmp_path, "run", **{"num-server-rounds": 2, "run.resume": True}))


def test_a_run_where_no_round_aggregated_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fedmedlora.client_app as client_app

    def broken(*args: Any, **kwargs: Any) -> dict:
        raise RuntimeError("site out of memory")

    monkeypatch.setattr(client_app, "train_locally", broken)
    with pytest.raises(RuntimeError, match="no round aggregated"):
        run_in_process(config(tmp_path, "empty", **{"num-server-rounds": 1}))
    summary = json.loads((tmp_path / "empty" / "summary.json").read_text())
    assert summary["status"] == "failed" and "no round aggregated" in summary["reason"]
    assert read_metrics(tmp_path / "empty")[1]["failures"] == 2
