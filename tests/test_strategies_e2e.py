"""End to end: every strategy name on the embedded default (NER, MiniLM) through the real ServerApp and ClientApp
code (`run_in_process`), Fed-MedLoRA+'s server scoring on the resident model, FedProx on the real trainer, and
failing clients. Tiny settings keep each run to seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedmedlora.launch.grid import run_in_process
from fedmedlora.recorder import read_metrics
from fedmedlora.strategies import STRATEGIES

pytestmark = pytest.mark.slow

TINY = {"data.max-train-examples": 64, "data.max-eval-examples": 16, "train.local-steps": 2,
        "num-server-rounds": 2, "data.num-sites": 2, "train.batch-size": 8, "data.max-length": 64}
COUNTERS = ("failures", "exclusions", "total-failures", "total-exclusions")


def run(tmp_path: Path, **overrides: Any) -> list[dict[str, Any]]:
    config = {**TINY, "run.results-dir": str(tmp_path), "run.name": "run",
              **{k.replace("__", ".").replace("_", "-"): v for k, v in overrides.items()}}
    result = run_in_process(config)
    return read_metrics(result["run-dir"])


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_runs_end_to_end(name: str, tmp_path: Path) -> None:
    sites = 3 if name in ("krum", "multikrum", "bulyan") else 2  # these need more than 2f + 2 replies a round
    records = run(tmp_path, strategy__name=name, data__num_sites=sites)
    assert [r["round"] for r in records] == [0, 1, 2]
    for record in records:
        assert all(isinstance(record[c], int) for c in COUNTERS)
        assert 0.0 <= record["server-eval"]["pooled"]["strict-f1"] <= 1.0
    for record in records[1:]:
        assert record["aggregated"] is True and record["usable"] == sites and record["failures"] == 0
        assert record["comm"]["train"]["received-mib"] > 0
    last = records[-1]
    if name == "fedavgopt":
        assert set(last["fedavgopt"]["alpha"]) == {"1", "2"}
    if name == "fed-medlora-plus":
        assert set(last["validation"]["losses"]) == {"1", "2"}
        assert sum(last["validation"]["weights"].values()) == pytest.approx(1.0)
    if name == "fedprox":
        assert all(c["proximal-mu"] == 0.01 and c["proximal-distance"] > 0 for c in last["clients"])
    # the adapter moved: round 2's evaluation differs from round 0's
    assert last["server-eval"]["pooled"]["loss"] != records[0]["server-eval"]["pooled"]["loss"]


def test_product_aggregation_end_to_end(tmp_path: Path) -> None:
    records = run(tmp_path, strategy__name="fed-medlora-plus", strategy__lora_aggregation="product",
                  strategy__validation_weighting="size-weighted", strategy__validation_loss="completion",
                  strategy__validation_max_examples=10)
    assert records[-1]["lora-product"]["layers"] == 12  # 6 layers x query, value
    assert records[-1]["validation"]["examples"] == 10


def test_server_scoring_uses_the_resident_model(tmp_path: Path) -> None:
    from fedmedlora.model.adapter import adapter_state, initial_adapter_state, load_adapter_state
    from fedmedlora.job import get_job
    from fedmedlora.model.resident import base_model_loads
    from fedmedlora.settings import parse_run_config
    from fedmedlora.strategies.server_validation import ServerValidation

    settings = parse_run_config({**TINY, "strategy.name": "fed-medlora-plus", "strategy.validation-max-examples": 20})
    job = get_job(settings)
    model = job.resident().model
    loads = base_model_loads()
    validation = ServerValidation(job)
    assert validation.examples == 20 and sum(validation.site_examples.values()) == 20
    state = initial_adapter_state(settings, job.task.head, len(job.labels), 7)
    other = {k: v + np.float32(0.05) * np.sign(v) for k, v in state.items()}
    loss, loss_other = validation.loss(state), validation.loss(other)
    assert np.isfinite(loss) and loss != loss_other
    # by hand: the mean labelled-token cross-entropy over the chosen rows, with the same adapter loaded
    load_adapter_state(model, state)
    nll = tokens = 0
    for _, rows, dataset in validation.parts:
        outcome = job.task.predict(job.resident(), rows, dataset, 4)
        nll, tokens = nll + outcome.loss_sum, tokens + outcome.loss_count
    assert loss == pytest.approx(nll / tokens, rel=1e-5)
    # one model in memory: no reload, no copy, and it holds the last scored adapter
    assert base_model_loads() == loads and job.resident().model is model
    np.testing.assert_allclose(adapter_state(model)[next(iter(state))], state[next(iter(state))])


def test_large_mu_keeps_the_real_adapter_closer(tmp_path: Path) -> None:
    from fedmedlora.model.adapter import initial_adapter_state, load_adapter_state
    from fedmedlora.job import get_job
    from fedmedlora.settings import parse_run_config
    from fedmedlora.model.training import ProximalTerm, train_locally

    settings = parse_run_config({**TINY, "train.local-steps": 4})
    job = get_job(settings)
    state = initial_adapter_state(settings, job.task.head, len(job.labels), 3)
    distance = {}
    for mu in (0.0, 100.0):
        load_adapter_state(job.resident().model, state)
        metrics = train_locally(job.settings, job.task, job.resident(), job.tokenized(0, "train"), learning_rate=5e-3, seed=1,
                                extra_loss=ProximalTerm(mu))
        distance[mu] = metrics["proximal-distance"]
    assert distance[100.0] < 0.8 * distance[0.0]


def test_failing_clients_are_excluded_and_an_empty_round_keeps_the_adapter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import fedmedlora.client_app as client_app

    real = client_app.train_locally
    failing = {"sites": {1}}

    def flaky(settings: Any, task: Any, resident: Any, dataset: Any, **kwargs: Any) -> dict:
        if kwargs["seed"] in failing["sites"]:  # the seed is the site (round_seed patched below)
            raise RuntimeError("simulated out-of-memory")
        return real(settings, task, resident, dataset, **kwargs)

    monkeypatch.setattr(client_app, "train_locally", flaky)
    monkeypatch.setattr(client_app, "round_seed", lambda settings, server_round, site: site)
    records = run(tmp_path / "one", strategy__name="fedavg", privacy__error_details=True)
    assert [(r["usable"], r["failures"], r["aggregated"]) for r in records[1:]] == [(1, 1, True), (1, 1, True)]
    assert records[-1]["total-failures"] == 2
    assert records[1]["excluded"][0]["reason"] == "client error: RuntimeError: simulated out-of-memory"

    failing["sites"] = {0, 1}
    with pytest.raises(RuntimeError, match="no round aggregated"):  # and the run ends "failed"
        run(tmp_path / "none", strategy__name="fedavg")
    records = read_metrics(tmp_path / "none" / "run")
    assert [r["aggregated"] for r in records[1:]] == [False, False]
    # the global adapter stayed the initial one: the same evaluation every round
    losses = {r["server-eval"]["pooled"]["loss"] for r in records}
    assert len(losses) == 1
    assert "the global adapter stays as it was" in capsys.readouterr().out
