"""Whole federations in process (the real ServerApp and ClientApp code, no Ray): results, learning, failures."""

from __future__ import annotations

import json

import pytest

from fedmedlora.launch.grid import run_in_process
from fedmedlora.federation.evaluation import FederatedEvaluation
from fedmedlora.recorder import read_metrics

from helpers import TINY_NER

LEARNS = {**TINY_NER, "data.max-train-examples": 200, "data.max-eval-examples": 50, "train.local-steps": 12,
          "train.batch-size": 16, "train.learning-rate-max": 5e-3, "train.learning-rate-min": 5e-3}


def test_entity_f1_rises_and_every_round_is_recorded(tmp_path):
    result = run_in_process({**LEARNS, "run.results-dir": str(tmp_path), "run.name": "learn"})
    run_dir = tmp_path / "learn"
    records = read_metrics(run_dir)
    f1 = [r["server-eval"]["pooled"]["strict-f1"] for r in records]
    assert len(f1) == 3 and f1[2] > f1[0] + 0.05, f1
    assert records[1]["train-aggregated"]["train-loss"] > records[2]["train-aggregated"]["train-loss"]
    for r in records[1:]:
        assert sorted(c["site"] for c in r["clients"]) == [0, 1, 2]
        assert list(r["weights"].values()) == pytest.approx([1 / 3] * 3)  # 200 examples each
        assert r["checkpoint"] == f"peft_{r['round']}" and (run_dir / r["checkpoint"]).is_dir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["strict-f1-per-round"] == pytest.approx(f1) and summary["rounds-aggregated"] == 2
    sites = json.loads((run_dir / "sites.json").read_text())
    assert [s["train-examples"] for s in sites] == [200, 200, 200]
    assert result["grid-calls"].count((1, "train")) == 2


def test_results_written_before_a_failure_are_kept(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = FederatedEvaluation.__call__

    def failing_evaluate(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FederatedEvaluation, "__call__", failing_evaluate)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_in_process({**TINY_NER, "run.results-dir": str(tmp_path), "run.name": "fails"})
    run_dir = tmp_path / "fails"
    assert [r["round"] for r in read_metrics(run_dir)] == [0, 1]
    assert (run_dir / "peft_1").is_dir()
    summary = json.loads((run_dir / "summary.json").read_text())
    # round 2 trained but never ended (its evaluation failed): it is not counted as completed
    assert summary["status"] == "failed" and summary["rounds-completed"] == 1
    assert summary["reason"] == "RuntimeError: disk on fire"


def test_a_failing_client_is_excluded_and_counted(tmp_path, monkeypatch):
    import fedmedlora.client_app as client_app

    original_train, original_seed = client_app.train_locally, client_app.round_seed
    current = {}

    def remember_site(settings, server_round, site):  # the in-process grid runs one client call at a time
        current["site"] = site
        return original_seed(settings, server_round, site)

    def flaky(settings, task, resident, dataset, **kwargs):
        if current["site"] == 0:
            raise RuntimeError("site 0 lost power")
        return original_train(settings, task, resident, dataset, **kwargs)

    monkeypatch.setattr(client_app, "round_seed", remember_site)
    monkeypatch.setattr(client_app, "train_locally", flaky)
    run_in_process({**TINY_NER, "run.seed": 0, "run.results-dir": str(tmp_path), "run.name": "flaky"})
    records = read_metrics(tmp_path / "flaky")
    for r in records[1:]:
        assert r["replies"] == 3 and r["usable"] == 2 and r["aggregated"]
        # the server learns what kind of error, not what it said (privacy.error-details = false)
        assert r["excluded"] == [{"node": 1, "reason": "client error: RuntimeError: the ClientApp failed at this "
                                                      "site; the site's log has the details"}]
