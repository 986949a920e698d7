"""Site-level differential privacy: the accounting (Flower's RdpAccountant over dp-accounting), the sites' clipping
(Flower's fixedclipping_mod behind a guard), the server's noise and re-clipping, and a whole run that reports
(epsilon, delta) per round and per run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedmedlora.aggregation.influence import update_norm
from fedmedlora.client_dp import ClippingNormMismatch, site_clipping_mod
from fedmedlora.launch.grid import NodeIdsGrid, node_context, set_task_identity, train_message
from fedmedlora.privacy_budget import PrivacyLedger, calibrate_noise_multiplier, epsilon_after
from fedmedlora.recorder import RunRecorder
from fedmedlora.run_config import load_settings
from fedmedlora.settings import ConfigError
from fedmedlora.strategies import build_strategy
from fedmedlora.strategies.differential_privacy import SiteLevelDP
from fedmedlora.wire import from_array_record, to_array_record

from helpers import TINY_NER

DP = {"privacy.dp": "site", "privacy.clipping-norm": 0.5}


# --- accounting --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("epsilon", [8.0, 3.0, 1.0])
def test_the_noise_multiplier_meets_the_target_epsilon(epsilon: float) -> None:
    z = calibrate_noise_multiplier(epsilon, 1e-5, releases=3)
    assert epsilon_after(z, 3, 1e-5) == pytest.approx(epsilon, rel=1e-3)
    assert epsilon_after(z, 3, 1e-5) <= epsilon + 1e-6  # never above the target
    assert epsilon_after(z * 0.9, 3, 1e-5) > epsilon  # and no more noise than needed


def test_the_ledger_charges_every_release_in_full() -> None:
    ledger = PrivacyLedger(num_sites=3, delta=1e-5)
    z = calibrate_noise_multiplier(3.0, 1e-5, releases=3)
    spent = [ledger.release(z, sites=2) for _ in range(3)]  # 2 of 3 sites a round: no amplification claimed
    assert [s["releases"] for s in spent] == [1, 2, 3]
    assert spent[0]["epsilon"] == pytest.approx(spent[0]["round-epsilon"])
    assert spent[0]["epsilon"] < spent[1]["epsilon"] < spent[2]["epsilon"] == pytest.approx(3.0, rel=1e-3)
    assert all(s["delta"] == 1e-5 for s in spent)


@pytest.mark.parametrize("overrides, fragment", [
    ({"strategy.name": "fedadam", "privacy.target-epsilon": 8.0}, "key 'strategy.name' = 'fedadam' with privacy.dp"),
    ({"strategy.lora-aggregation": "product", "privacy.target-epsilon": 8.0}, "'product' with privacy.dp = 'site'"),
    ({}, "set exactly one of them > 0"),
    ({"privacy.target-epsilon": 8.0, "privacy.noise-multiplier": 1.0}, "set exactly one of them > 0"),
    ({"privacy.target-epsilon": 8.0, "privacy.delta": 1.0}, "key 'privacy.delta' = 1.0: must be in (0, 1)"),
])
def test_dp_settings_are_refused_up_front(overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**DP, **overrides})
    assert fragment in str(info.value)


# --- the site clips (Flower's fixedclipping_mod) -----------------------------------------------------------------

def _site_reply(msg: Message, context: Context) -> Message:
    """A ClientApp whose adapter moved by 3 in every coordinate: an update far above any clipping norm."""
    received = from_array_record(msg.content["arrays"])
    set_task_identity(1, 1)
    return Message(RecordDict({"arrays": to_array_record({k: v + 3.0 for k, v in received.items()}, "float16"),
                               "metrics": MetricRecord({"num-examples": 4})}), reply_to=msg)


def test_the_site_clips_its_update_to_the_agreed_norm() -> None:
    global_state = {"a": np.linspace(-0.1, 0.1, 64, dtype=np.float32).reshape(8, 8), "b": np.zeros(8, np.float32)}
    wire = to_array_record(global_state, "float16")
    config = {**DP, "privacy.noise-multiplier": 1.0}
    out = site_clipping_mod(train_message(wire, node_id=1, clipping_norm=0.5), node_context(config, 0, 3),
                            _site_reply)
    sent = from_array_record(out.content["arrays"])
    assert {a.dtype for a in out.content["arrays"].values()} == {"float16"}
    assert update_norm(sent, from_array_record(wire)) == pytest.approx(0.5, rel=5e-3)  # float16 rounding

    with pytest.raises(ClippingNormMismatch, match="asked for clipping norm 5.0; key 'privacy.clipping-norm' = 0.5"):
        site_clipping_mod(train_message(wire, node_id=1, clipping_norm=5.0), node_context(config, 0, 3), _site_reply)
    untouched = site_clipping_mod(train_message(wire, node_id=1), node_context({}, 0, 3), _site_reply)
    assert update_norm(from_array_record(untouched.content["arrays"]), global_state) > 20  # DP off: no clipping


# --- the server: re-clip, uniform mean, noise, ledger --------------------------------------------------------------

def _strategy(tmp_path: Path, sites: int, size: int, **overrides: Any) -> tuple[Any, RunRecorder]:
    settings = load_settings({"data.num-sites": sites, **DP, "privacy.noise-multiplier": 2.0, **overrides})
    recorder = RunRecorder(tmp_path)
    return build_strategy(settings, recorder, {"w": np.zeros(size, np.float32)}), recorder


def _round(strategy: Any, sites: int, updates: list[np.ndarray | None], examples: list[float]) -> np.ndarray | None:
    set_task_identity(1, 0)
    out = sorted(strategy.configure_train(1, to_array_record({"w": np.zeros(updates[0].size, np.float32)},
                                                             "float32"), ConfigRecord(), NodeIdsGrid(sites)),
                 key=lambda m: m.metadata.dst_node_id)
    assert all(m.content["config"]["clipping_norm"] == 0.5 for m in out)  # Flower's wrapper tells the sites
    replies = []
    for msg, update, n in zip(out, updates, examples):
        set_task_identity(1, msg.metadata.dst_node_id)
        replies.append(Message(RecordDict({"arrays": to_array_record({"w": update}, "float32"),
                                           "metrics": MetricRecord({"num-examples": n, "site": 0})}), reply_to=msg))
    set_task_identity(1, 0)
    arrays, _ = strategy.aggregate_train(1, replies)
    return None if arrays is None else from_array_record(arrays)["w"]


def test_the_server_adds_noise_for_the_updates_it_averaged(tmp_path: Path) -> None:
    size = 40_000
    strategy, recorder = _strategy(tmp_path, 3, size, **{"strategy.weight-cap": False})
    assert isinstance(strategy, SiteLevelDP)
    unit = np.ones(size, np.float32) / math.sqrt(size)  # norm 1
    # three clipped updates (norm 0.5) of which the third one's site did not clip (norm 50): re-clipped to 0.5;
    # uniform weights whatever the claimed examples
    updates = [0.5 * unit, -0.5 * unit, 50.0 * unit]
    result = _round(strategy, 3, updates, [1.0, 1.0, 1e9])
    mean = (0.5 - 0.5 + 0.5) / 3 * unit
    noise = result - mean
    assert float(noise.std()) == pytest.approx(2.0 * 0.5 / 3, rel=0.02)  # z x C / sites averaged
    assert abs(float(noise.mean())) < 0.01
    log = recorder.round(1)
    assert log["clips"] == 1 and "the site did not clip" in log["clipped"][0]["reason"]
    assert log["weights"] == {"1": pytest.approx(1 / 3), "2": pytest.approx(1 / 3), "3": pytest.approx(1 / 3)}
    privacy = log["privacy"]
    assert privacy["released"] and privacy["sites-averaged"] == 3 and privacy["noise-multiplier"] == 2.0
    assert privacy["epsilon"] == pytest.approx(epsilon_after(2.0, 1, 1e-5))
    assert recorder.summary_fields["privacy"]["epsilon"] == privacy["epsilon"]


def test_fewer_updates_averaged_get_more_noise(tmp_path: Path) -> None:
    size = 40_000
    strategy, recorder = _strategy(tmp_path, 3, size, **{"strategy.weight-cap": False})
    unit = np.ones(size, np.float32) / math.sqrt(size)
    result = _round(strategy, 3, [0.5 * unit, 0.5 * unit, np.full(size, np.nan, np.float32)], [1, 1, 1])
    assert recorder.round(1)["exclusions"] == 1  # NaN: left out
    assert float((result - 0.5 * unit).std()) == pytest.approx(2.0 * 0.5 / 2, rel=0.02)


# --- a whole run -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_private_run_reports_epsilon_per_round_and_per_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fedmedlora.launch.grid import run_in_process
    from fedmedlora.recorder import read_metrics

    config = {**TINY_NER, **DP, "privacy.clipping-norm": 0.05, "privacy.target-epsilon": 8.0,
              "run.results-dir": str(tmp_path), "run.name": "private"}
    run_in_process(config)
    records = read_metrics(tmp_path / "private")
    privacy = [r["privacy"] for r in records[1:]]
    assert [p["releases"] for p in privacy] == [1, 2]
    assert privacy[0]["epsilon"] < privacy[1]["epsilon"] == pytest.approx(8.0, rel=1e-3)  # 2 rounds, target 8
    assert all(p["delta"] == 1e-5 and p["unit"] == "site" for p in privacy)
    for record in records[1:]:
        # every site clipped its update on the site: the server found nothing left to clip
        assert record["clips"] == 0 and record["usable"] == 3
        assert max(c["update-norm"] for c in record["clients"]) <= 0.05 * 1.05
    summary = json.loads((tmp_path / "private" / "summary.json").read_text())
    assert summary["privacy"]["epsilon"] == pytest.approx(privacy[-1]["epsilon"])
    strategy_info = json.loads((tmp_path / "private" / "strategy.json").read_text())
    assert strategy_info["privacy"]["privacy.dp"] == "site"
    out = capsys.readouterr().out
    assert "round 2: privacy spent epsilon = 8.0000 at delta = 1e-05 after 2 release(s)" in out


# --- example-level DP: DP-SGD on each site (Opacus) ----------------------------------------------------------------

EXAMPLE = {"privacy.dp": "example", "privacy.clipping-norm": 1.0}


def test_dp_sgd_noise_meets_the_target_epsilon() -> None:
    from fedmedlora.privacy_budget import calibrate_dp_sgd, dp_sgd_epsilon

    q, steps = 16 / 5662, 90  # the default run: 16-sentence batches from 5,662, 3 rounds x 30 steps
    z = {eps: calibrate_dp_sgd(eps, 1e-5, q, steps) for eps in (8.0, 1.0)}
    assert dp_sgd_epsilon(z[8.0], q, steps, 1e-5) == pytest.approx(8.0, rel=1e-3)
    assert dp_sgd_epsilon(z[1.0], q, steps, 1e-5) == pytest.approx(1.0, rel=1e-3)
    assert z[8.0] < z[1.0] < calibrate_dp_sgd(1.0, 1e-5, 10 * q, steps)  # more sampled, more noise


@pytest.mark.parametrize("overrides, fragment", [
    ({"strategy.name": "fedprox"}, "key 'strategy.name' = 'fedprox' with privacy.dp = 'example'"),
    ({"train.local-steps": 0, "train.local-epochs": 1.0}, "key 'train.local-steps' = 0: privacy.dp = 'example'"),
])
def test_example_dp_settings_are_refused_up_front(overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**EXAMPLE, "privacy.target-epsilon": 8.0, **overrides})
    assert fragment in str(info.value)


def test_example_dp_runs_on_encoder_tasks_only(tmp_path: Path) -> None:
    class CausalJob:
        family = "causal"

    settings = load_settings({**EXAMPLE, "privacy.target-epsilon": 8.0, "model.name": "builtin:tiny-llama"})
    with pytest.raises(ConfigError, match="DP-SGD runs on encoder tasks"):
        build_strategy(settings, RunRecorder(tmp_path), {"w": np.zeros(1, np.float32)}, CausalJob())


def test_a_reply_without_dp_epsilon_is_left_out_and_sites_epsilons_are_recorded(tmp_path: Path) -> None:
    settings = load_settings({"data.num-sites": 3, **EXAMPLE, "privacy.target-epsilon": 8.0})
    recorder = RunRecorder(tmp_path)
    strategy = build_strategy(settings, recorder, {"w": np.zeros(1, np.float32)})
    set_task_identity(1, 0)
    out = sorted(strategy.configure_train(1, to_array_record({"w": np.zeros(1, np.float32)}, "float32"),
                                          ConfigRecord(), NodeIdsGrid(3)), key=lambda m: m.metadata.dst_node_id)
    replies = []
    for msg, spent in zip(out, [2.5, 3.0, None]):
        set_task_identity(1, msg.metadata.dst_node_id)
        metrics = {"num-examples": 10, "site": msg.metadata.dst_node_id - 1}
        if spent is not None:
            metrics.update({"dp-epsilon": spent, "dp-noise-multiplier": 0.5})
        replies.append(Message(RecordDict({"arrays": to_array_record({"w": np.ones(1, np.float32)}, "float16"),
                                           "metrics": MetricRecord(metrics)}), reply_to=msg))
    set_task_identity(1, 0)
    strategy.aggregate_train(1, replies)
    log = recorder.round(1)
    assert log["exclusions"] == 1 and "reports no 'dp-epsilon': not trained with DP-SGD" in log["excluded"][0]["reason"]
    assert log["privacy"]["epsilon"] == 3.0 and log["privacy"]["unit"] == "example"
    assert log["privacy"]["sites"] == {"site 0": {"epsilon": 2.5, "noise-multiplier": 0.5},
                                       "site 1": {"epsilon": 3.0, "noise-multiplier": 0.5}}
    assert log["train-aggregated"]["dp-epsilon"] == 3.0  # the largest, not a mean


@pytest.mark.slow
def test_a_site_trains_with_dp_sgd_and_leaves_the_resident_model_clean() -> None:
    from fedmedlora import client_app
    from fedmedlora.job import get_job
    from fedmedlora.model.adapter import initial_adapter_state
    from fedmedlora.settings import parse_run_config

    private = {**TINY_NER, **EXAMPLE, "privacy.target-epsilon": 8.0}
    job = get_job(parse_run_config(TINY_NER))
    initial = to_array_record(initial_adapter_state(job.settings, job.task.head, len(job.labels), seed=3), "float16")

    def plain() -> dict[str, np.ndarray]:
        reply = client_app.app(train_message(initial, node_id=1, server_round=1), node_context(TINY_NER, 0, 3))
        return from_array_record(reply.content["arrays"])

    before = plain()
    spent = []
    for server_round in (1, 2):  # TINY_NER runs 2 rounds: the second spends the whole target
        reply = client_app.app(train_message(initial, node_id=1, server_round=server_round),
                               node_context(private, 0, 3))
        assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
        metrics = dict(reply.content["metrics"])
        assert metrics["train-steps"] == 3 and metrics["dp-noise-multiplier"] > 0
        spent.append(metrics["dp-epsilon"])
    assert spent[0] < spent[1] == pytest.approx(8.0, rel=1e-3)
    model = get_job(parse_run_config(TINY_NER)).resident().model
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())  # Opacus' hooks are gone
    after = plain()  # the same non-private round as before: nothing of DP-SGD is left in the resident model
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_an_example_private_run_reports_epsilon_per_round_and_per_run(tmp_path: Path) -> None:
    from fedmedlora.launch.grid import run_in_process
    from fedmedlora.recorder import read_metrics

    run_in_process({**TINY_NER, **EXAMPLE, "privacy.target-epsilon": 3.0, "run.results-dir": str(tmp_path),
                    "run.name": "dp-sgd"})
    records = read_metrics(tmp_path / "dp-sgd")
    privacy = [r["privacy"] for r in records[1:]]
    assert privacy[0]["epsilon"] < privacy[1]["epsilon"] == pytest.approx(3.0, rel=1e-3)
    assert set(privacy[1]["sites"]) == {"site 0", "site 1", "site 2"} and privacy[1]["unit"] == "example"
    assert all(r["usable"] == 3 and r["aggregated"] for r in records[1:])
    summary = json.loads((tmp_path / "dp-sgd" / "summary.json").read_text())
    assert summary["privacy"]["epsilon"] == pytest.approx(3.0, rel=1e-3)
