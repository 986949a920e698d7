"""Every aggregation rule through Flower's `configure_train` / `aggregate_train` with real `Message` replies.

Client adapters are tiny (a rank-1 or rank-2 LoRA layer of 2 x 2, or one scalar) so every expected number is worked
out by hand in the comments. Replies travel in float16, as from real clients, with values float16 holds exactly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict

from fedmedlora.wire import from_array_record, to_array_record
from fedmedlora.launch.grid import NodeIdsGrid, set_task_identity
from fedmedlora.recorder import RunRecorder
from fedmedlora.run_config import load_settings
from fedmedlora.settings import ConfigError, parse_run_config
from fedmedlora.strategies import STRATEGIES, build_strategy, resolve_weight_by, unused_settings


A, B = "m.layers.0.query.lora_A.weight", "m.layers.0.query.lora_B.weight"


def make(overrides: dict[str, Any], initial: dict[str, np.ndarray], tmp_path: Path, sites: int = 2,
         job: Any = None) -> tuple[Any, RunRecorder]:
    settings = parse_run_config({"data.num-sites": sites, **overrides})
    recorder = RunRecorder(tmp_path)
    return build_strategy(settings, recorder, initial, job), recorder


def send(strategy: Any, state: dict[str, np.ndarray], sites: int, server_round: int = 1) -> list[Message]:
    set_task_identity(1, 0)
    messages = strategy.configure_train(server_round, to_array_record(state, "float32"), ConfigRecord(),
                                        NodeIdsGrid(sites))
    return sorted(messages, key=lambda m: m.metadata.dst_node_id)  # Flower samples in random order


def reply(out: Message, state: dict[str, np.ndarray], examples: float = 1, tokens: float = 1,
          dtype: str = "float16", **metrics: float) -> Message:
    set_task_identity(1, out.metadata.dst_node_id)
    content = RecordDict({"arrays": to_array_record(state, dtype),
                          "metrics": MetricRecord({"num-examples": examples, "num-tokens": tokens,
                                                   "site": out.metadata.dst_node_id - 1, "train-loss": 1.0,
                                                   **metrics})})
    return Message(content, reply_to=out)


def error_reply(out: Message) -> Message:
    set_task_identity(1, out.metadata.dst_node_id)
    return Message(Error(code=0, reason="RuntimeError: out of memory"), reply_to=out)


def aggregate(strategy: Any, replies: list[Message], server_round: int = 1) -> dict[str, np.ndarray] | None:
    set_task_identity(1, 0)
    arrays, _ = strategy.aggregate_train(server_round, replies)
    return None if arrays is None else from_array_record(arrays)


def lora(b: list[list[float]], a: list[list[float]]) -> dict[str, np.ndarray]:
    return {A: np.array(a, np.float32), B: np.array(b, np.float32)}


def scalar(value: float) -> dict[str, np.ndarray]:
    return {"w": np.array([value], np.float32)}


# --- FedAvg and Fed-MedLoRA ------------------------------------------------------------------------------------------

def test_fedavg_weights_by_examples_and_sends_float16(tmp_path: Path) -> None:
    strategy, recorder = make({"strategy.name": "fedavg"}, scalar(0.1), tmp_path)
    out = send(strategy, scalar(0.1), 2)
    assert [m.content["arrays"]["w"].numpy().dtype for m in out] == [np.float16, np.float16]
    assert out[0].content["config"]["learning-rate"] == pytest.approx(3e-3)  # train.learning-rate-max, round 1
    # examples 1 and 3: weights 1/4 and 3/4 -> 0.25 * 1 + 0.75 * 2 = 1.75
    result = aggregate(strategy, [reply(out[0], scalar(1.0), examples=1, tokens=9),
                                  reply(out[1], scalar(2.0), examples=3, tokens=1)])
    assert result["w"].dtype == np.float32 and result["w"][0] == pytest.approx(1.75)
    record = recorder.round(1)
    assert record["weights"] == {"1": 0.25, "2": 0.75}
    assert (record["replies"], record["usable"], record["failures"], record["exclusions"]) == (2, 2, 0, 0)
    assert record["aggregated"] is True


def test_fed_medlora_weights_by_tokens_unless_told(tmp_path: Path) -> None:
    assert resolve_weight_by(parse_run_config({"strategy.name": "fed-medlora", "strategy.weight-by": "auto"})) == "tokens"
    assert resolve_weight_by(parse_run_config({"strategy.name": "fedavg", "strategy.weight-by": "auto"})) == "examples"
    strategy, _ = make({"strategy.name": "fed-medlora"}, scalar(0.0), tmp_path)
    out = send(strategy, scalar(0.0), 2)
    # tokens 1 and 3: 0.25 * 1 + 0.75 * 2 = 1.75 (examples would give 0.5 * 1 + 0.5 * 2 = 1.5)
    result = aggregate(strategy, [reply(out[0], scalar(1.0), examples=5, tokens=1),
                                  reply(out[1], scalar(2.0), examples=5, tokens=3)])
    assert result["w"][0] == pytest.approx(1.75)
    strategy, _ = make({"strategy.name": "fed-medlora", "strategy.weight-by": "examples"}, scalar(0.0), tmp_path)
    out = send(strategy, scalar(0.0), 2)
    result = aggregate(strategy, [reply(out[0], scalar(1.0), examples=5, tokens=1),
                                  reply(out[1], scalar(2.0), examples=5, tokens=3)])
    assert result["w"][0] == pytest.approx(1.5)


def test_product_aggregation_is_exact_where_factor_averaging_is_not(tmp_path: Path) -> None:
    # r = 2. Client 1: B1 = [[2,0],[0,0]], A1 = [[1,0],[0,0]] -> B1 A1 = [[2,0],[0,0]];
    # client 2: B2 = [[0,0],[0,2]], A2 = [[0,0],[0,1]] -> B2 A2 = [[0,0],[0,2]]. Equal weights.
    # Exact average of the updates: I. Factor averaging: B = I, A = 0.5 I, so B A = 0.5 I: half the update is lost.
    one = lora([[2, 0], [0, 0]], [[1, 0], [0, 0]])
    two = lora([[0, 0], [0, 2]], [[0, 0], [0, 1]])
    initial = lora([[0, 0], [0, 0]], [[1, 0], [0, 1]])
    products = {}
    for mode in ("factors", "product"):
        strategy, recorder = make({"strategy.name": "fedavg", "strategy.lora-aggregation": mode}, initial, tmp_path)
        out = send(strategy, initial, 2)
        result = aggregate(strategy, [reply(out[0], one), reply(out[1], two)])
        products[mode] = result[B].astype(np.float64) @ result[A].astype(np.float64)
    np.testing.assert_allclose(products["factors"], 0.5 * np.eye(2), atol=1e-7)
    np.testing.assert_allclose(products["product"], np.eye(2), atol=1e-6)
    assert recorder.round(1)["lora-product"]["max-truncation-error"] == pytest.approx(0.0, abs=1e-9)


# --- FedAvgOpt -------------------------------------------------------------------------------------------------------

def test_fedavgopt_moves_the_aggregate_and_logs_alpha(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # F(g) = |g-1|/(g+1) + |g-3|/(g+3), g = (alpha_1 * 1 + alpha_2 * 3) / 2 (equal n): FedAvg's g = 2 gives
    # 1/3 + 1/5 = 8/15; the minimum 0.5 lies at g = 1 or g = 3 (the aggregate lands on one client)
    strategy, recorder = make({"strategy.name": "fedavgopt"}, scalar(0.0), tmp_path)
    out = send(strategy, scalar(0.0), 2)
    result = aggregate(strategy, [reply(out[0], scalar(1.0), examples=7), reply(out[1], scalar(3.0), examples=7)])
    log = recorder.round(1)["fedavgopt"]
    assert log["objective-fedavg"] == pytest.approx(8 / 15)
    assert log["objective"] == pytest.approx(0.5, abs=1e-3)
    assert min(abs(result["w"][0] - 1), abs(result["w"][0] - 3)) < 1e-2
    alpha = log["alpha"]
    assert (alpha["1"] * 1 + alpha["2"] * 3) / 2 == pytest.approx(result["w"][0], rel=1e-5)
    assert "fedavgopt: alpha site 0 " in capsys.readouterr().out


# --- Fed-MedLoRA+ ----------------------------------------------------------------------------------------------------

def plus(overrides: dict[str, Any], tmp_path: Path) -> tuple[Any, RunRecorder]:
    """fed-medlora-plus with the `no_server_validation` scorer (no model: the job is a placeholder)."""
    return make({"strategy.name": "fed-medlora-plus", **overrides}, scalar(0.0), tmp_path, job=object())


@pytest.fixture
def no_server_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation losses read off a client's scalar adapter: 1 -> 0, 2 -> ln 2, 4 -> NaN."""

    class Fixed:
        def __init__(self, job: Any):
            pass

        def describe(self) -> dict:
            return {"examples": 0}

        def loss(self, state: dict[str, np.ndarray]) -> float:
            return {1.0: 0.0, 2.0: math.log(2), 4.0: float("nan")}[float(state["w"][0])]

    monkeypatch.setattr("fedmedlora.strategies.server_validation.ServerValidation", Fixed)


@pytest.mark.parametrize("overrides, weights", [
    # losses 0 and ln 2: softmax(-L) = 1 : 1/2 -> 2/3, 1/3 (the seed's exp(1 - L) / sum gives the same)
    ({}, (2 / 3, 1 / 3)),
    # T = 0.5 doubles the gap: 1 : 1/4 -> 4/5, 1/5
    ({"strategy.temperature": 0.5}, (4 / 5, 1 / 5)),
    # size-weighted with tokens 1 and 4 (weight-by auto = tokens): 1 * 1 : 4 * 1/2 -> 1/3, 2/3
    ({"strategy.validation-weighting": "size-weighted"}, (1 / 3, 2 / 3)),
])
def test_fed_medlora_plus_weights(overrides: dict, weights: tuple[float, float], tmp_path: Path,
                                  no_server_validation: None, capsys: pytest.CaptureFixture) -> None:
    strategy, recorder = plus(overrides, tmp_path)
    out = send(strategy, scalar(0.0), 2)
    result = aggregate(strategy, [reply(out[0], scalar(1.0), tokens=1), reply(out[1], scalar(2.0), tokens=4)])
    assert result["w"][0] == pytest.approx(weights[0] * 1 + weights[1] * 2, rel=1e-6)
    log = recorder.round(1)["validation"]
    assert log["losses"] == {"1": 0.0, "2": pytest.approx(math.log(2))}
    assert log["weights"] == {"1": pytest.approx(weights[0]), "2": pytest.approx(weights[1])}
    assert f"fed-medlora-plus: site 0 loss 0.0000 weight {weights[0]:.3f}, site 1 loss 0.6931" in (
        capsys.readouterr().out)


def test_fed_medlora_plus_excludes_a_non_finite_loss(tmp_path: Path, no_server_validation: None) -> None:
    strategy, recorder = plus({}, tmp_path)
    out = send(strategy, scalar(0.0), 2)
    result = aggregate(strategy, [reply(out[0], scalar(2.0)), reply(out[1], scalar(4.0))])
    assert result["w"][0] == pytest.approx(2.0)  # the other client alone
    record = recorder.round(1)
    assert record["exclusions"] == 1 and record["usable"] == 1
    assert "validation loss is not finite" in record["excluded"][0]["reason"]


def test_fed_medlora_plus_needs_the_job(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs the job"):
        make({"strategy.name": "fed-medlora-plus"}, scalar(0.0), tmp_path)


# --- robustness: screening, counters, minimum replies ----------------------------------------------------------------

def test_bad_replies_are_excluded_and_counted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    initial = lora([[0], [0]], [[1, 0]])
    good = lora([[1], [2]], [[1, 0]])
    strategy, recorder = make({"strategy.name": "fedavg", "strategy.min-replies": 1}, initial, tmp_path, sites=6)
    out = send(strategy, initial, 6)
    nan = lora([[float("nan")], [0]], [[1, 0]])
    missing = {A: good[A]}
    extra = {**good, "m.extra.weight": np.zeros(2, np.float32)}
    shape = lora([[1, 2], [3, 4]], [[1, 0], [0, 1]])
    replies = [reply(out[0], good), reply(out[1], nan), error_reply(out[2]), reply(out[3], missing),
               reply(out[4], extra), reply(out[5], shape)]
    result = aggregate(strategy, replies)
    np.testing.assert_array_equal(result[B], good[B])  # the one usable reply
    record = recorder.round(1)
    assert (record["replies"], record["usable"], record["failures"], record["exclusions"]) == (6, 1, 1, 4)
    reasons = {e["node"]: e["reason"] for e in record["excluded"]}
    assert "NaN" in reasons[2] and "client error: RuntimeError" in reasons[3]
    assert "missing 1 key" in reasons[4] and "unexpected key" in reasons[5] and "shape" in reasons[6]
    line = recorder.end_round(1)  # the recorder keeps the run's running totals
    assert line["total-exclusions"] == 4 and line["total-failures"] == 1
    assert "node 2 left out of the aggregate: 'm.layers.0.query.lora_B.weight' has non-finite values" in (
        capsys.readouterr().out)


def test_a_sampled_client_that_never_replies_is_a_failure(tmp_path: Path) -> None:
    strategy, recorder = make({"strategy.name": "fedavg"}, scalar(0.0), tmp_path, sites=3)
    out = send(strategy, scalar(0.0), 3)
    result = aggregate(strategy, [reply(out[0], scalar(1.0)), reply(out[2], scalar(3.0))])  # node 2 timed out
    assert result["w"][0] == pytest.approx(2.0)
    record = recorder.round(1)
    assert (record["replies"], record["usable"], record["failures"]) == (2, 2, 1)
    assert record["excluded"] == [{"node": 2, "reason": "no reply within strategy.round-timeout = 3600 s"}]


def test_too_few_usable_replies_keep_the_adapter(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    strategy, recorder = make({"strategy.name": "fedadam", "strategy.min-replies": 2}, scalar(0.5), tmp_path)
    out = send(strategy, scalar(0.5), 2)
    assert aggregate(strategy, [reply(out[0], scalar(1.0)), reply(out[1], scalar(float("inf")))]) is None
    record = recorder.round(1)
    assert record["aggregated"] is False and record["usable"] == 1 and record["exclusions"] == 1
    assert "the global adapter stays as it was" in capsys.readouterr().out


def test_differing_metric_keys_do_not_stop_flowers_own_rules(tmp_path: Path) -> None:
    # Flower's parents refuse replies whose metric keys differ; the mixin keeps the shared keys
    strategy, _ = make({"strategy.name": "fedmedian"}, scalar(0.0), tmp_path)
    out = send(strategy, scalar(0.0), 2)
    result = aggregate(strategy, [reply(out[0], scalar(1.0), extra_metric=3.0), reply(out[1], scalar(2.0))])
    assert result["w"][0] == pytest.approx(1.5)


def test_reply_key_order_does_not_matter(tmp_path: Path) -> None:
    # FedAvgM pairs arrays by position: replies are put back in the global key order
    initial = {"a": np.zeros(1, np.float32), "b": np.zeros(1, np.float32)}
    strategy, _ = make({"strategy.name": "fedavgm"}, initial, tmp_path)
    out = send(strategy, initial, 2)
    flipped = {"b": np.array([2.0], np.float32), "a": np.array([1.0], np.float32)}
    result = aggregate(strategy, [reply(out[0], flipped), reply(out[1], flipped)])
    assert (result["a"][0], result["b"][0]) == (pytest.approx(1.0), pytest.approx(2.0))


# --- Flower's own strategies -----------------------------------------------------------------------------------------

def test_fedprox_sends_mu_and_averages(tmp_path: Path) -> None:
    strategy, _ = make({"strategy.name": "fedprox", "strategy.proximal-mu": 0.25}, scalar(0.0), tmp_path)
    out = send(strategy, scalar(0.0), 2)
    config = out[0].content["config"]
    assert config["proximal-mu"] == 0.25 and config["server-round"] == 1 and "learning-rate" in config
    result = aggregate(strategy, [reply(out[0], scalar(1.0), examples=1), reply(out[1], scalar(2.0), examples=3)])
    assert result["w"][0] == pytest.approx(1.75)


def test_sampling_and_weight_key_reach_flower(tmp_path: Path) -> None:
    strategy, _ = make({"strategy.name": "fedyogi", "strategy.clients-per-round": 2, "strategy.weight-by": "tokens"},
                       scalar(0.0), tmp_path, sites=3)
    assert len(send(strategy, scalar(0.0), 3)) == 2
    # a round needs strategy.min-replies nodes, not every site (tests/test_availability.py)
    assert strategy.weighted_by_key == "num-tokens" and strategy.min_available_nodes == 1


def test_fedmedian_and_fedtrimmedavg(tmp_path: Path) -> None:
    strategy, _ = make({"strategy.name": "fedmedian"}, scalar(0.0), tmp_path, sites=3)
    out = send(strategy, scalar(0.0), 3)
    result = aggregate(strategy, [reply(m, scalar(v), examples=e) for m, v, e in zip(out, (1, 2, 10), (9, 1, 1))])
    assert result["w"][0] == pytest.approx(2.0)  # the median, whatever the weights
    strategy, _ = make({"strategy.name": "fedtrimmedavg", "strategy.trimmed-fraction": 0.2}, scalar(0.0), tmp_path,
                       sites=5)
    out = send(strategy, scalar(0.0), 5)
    # 5 clients, int(0.2 * 5) = 1 cut at each end: mean(2, 3, 4) = 3
    result = aggregate(strategy, [reply(m, scalar(v)) for m, v in zip(out, (1, 2, 3, 4, 100))])
    assert result["w"][0] == pytest.approx(3.0)


def test_fedavgm_momentum_over_two_rounds(tmp_path: Path) -> None:
    # lr 1, momentum 0.9. Round 1: x = 0, average 1, pseudo-gradient -1, momentum -1: x = 1.
    # Round 2: average 2, pseudo-gradient -1, momentum 0.9 * -1 - 1 = -1.9: x = 1 + 1.9 = 2.9
    strategy, _ = make({"strategy.name": "fedavgm"}, scalar(0.0), tmp_path)
    x = scalar(0.0)
    for server_round, value in ((1, 1.0), (2, 2.0)):
        out = send(strategy, x, 2, server_round)
        x = aggregate(strategy, [reply(m, scalar(value)) for m in out], server_round)
    assert x["w"][0] == pytest.approx(2.9, rel=1e-6)


def _adam_step(x0: float, mean: float, eta: float, beta_1: float, beta_2: float, tau: float, bias: bool) -> float:
    delta = mean - x0
    m, v = (1 - beta_1) * delta, (1 - beta_2) * delta ** 2
    scale = eta * math.sqrt(1 - beta_2 ** 2) / (1 - beta_1 ** 2) if bias else eta  # Flower's FedAdam, round 1
    return x0 + scale * m / (math.sqrt(v) + tau)


@pytest.mark.parametrize("name, overrides, expected", [
    # FedAdam round 1 (Flower): eta_norm = eta sqrt(1 - beta_2^2) / (1 - beta_1^2); x0 = 0.1 is not a float16
    # number, so a parent working on the float16 wire copy would be off by 2.4e-5
    ("fedadam", {}, _adam_step(0.1, 1.0, 0.1, 0.9, 0.99, 1e-3, bias=True)),
    ("fedadam", {"strategy.server-learning-rate": 0.01}, _adam_step(0.1, 1.0, 0.01, 0.9, 0.99, 1e-3, bias=True)),
    # FedYogi round 1 from v = 0: v = (1 - beta_2) delta^2, m = (1 - beta_1) delta, no bias correction, eta 0.01
    ("fedyogi", {}, _adam_step(0.1, 1.0, 0.01, 0.9, 0.99, 1e-3, bias=False)),
    # FedAdagrad: beta_1 = 0, v = delta^2: x0 + eta delta / (|delta| + tau)
    ("fedadagrad", {"strategy.tau": 0.1}, 0.1 + 0.1 * 0.9 / (0.9 + 0.1)),
])
def test_fedopt_family_step_from_float32_arrays(name: str, overrides: dict, expected: float, tmp_path: Path) -> None:
    strategy, _ = make({"strategy.name": name, **overrides}, scalar(0.1), tmp_path)
    out = send(strategy, scalar(0.1), 2)
    assert out[0].content["arrays"]["w"].numpy().dtype == np.float16  # the wire copy
    result = aggregate(strategy, [reply(m, scalar(1.0)) for m in out])
    assert result["w"][0] == pytest.approx(expected, rel=1e-6)


# --- settings, validated before any training -------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, fragment", [
    ({"strategy.name": "fed-medlora-plus", "data.val-fraction": 0.0}, "key 'data.val-fraction' = 0.0"),
    ({"strategy.temperature": 0.0}, "key 'strategy.temperature' = 0.0: must be > 0"),
    ({"strategy.trimmed-fraction": 0.5}, "key 'strategy.trimmed-fraction' = 0.5: must be in [0, 0.5)"),
    ({"strategy.server-momentum": 1.0}, "key 'strategy.server-momentum' = 1.0: must be in [0, 1)"),
    ({"strategy.proximal-mu": -1.0}, "key 'strategy.proximal-mu' = -1.0: must be >= 0"),
    ({"strategy.name": "fedavgopt", "strategy.lora-aggregation": "product"},
     "key 'strategy.lora-aggregation' = 'product' with strategy.name = 'fedavgopt'"),
    ({"strategy.name": "fedadam", "strategy.lora-aggregation": "product"}, "applies to fedavg, fed-medlora"),
    ({"strategy.validation-weighting": "paper"}, "allowed values are 'seed', 'size-weighted'"),
    ({"strategy.name": "fednova"}, "allowed values are 'fedavg', 'fed-medlora', 'fed-medlora-plus'"),
])
def test_strategy_settings_are_refused_up_front(overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides)
    assert fragment in str(info.value)


def test_every_name_builds_and_unused_settings_are_named(tmp_path: Path) -> None:
    for name in STRATEGIES:
        if name != "fed-medlora-plus":
            make({"strategy.name": name}, scalar(0.0), tmp_path)
    settings = parse_run_config({"strategy.name": "fedavg", "strategy.proximal-mu": 0.5})
    assert unused_settings(settings) == ["strategy.proximal-mu"]
    assert unused_settings(parse_run_config({"strategy.name": "fedprox", "strategy.proximal-mu": 0.5})) == []


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad"])
def test_adaptive_optimisers_warn_when_tau_is_below_a_lora_update(name: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    initial = {A: np.zeros((2, 4), np.float32), B: np.zeros((4, 2), np.float32)}
    make({"strategy.name": name}, initial, tmp_path)  # Flower's tau, 0.001: measured to end at F1 0
    assert "strategy.tau = 0.001 is below a LoRA round's typical update" in capsys.readouterr().out
    make({"strategy.name": name, "strategy.tau": 0.01}, initial, tmp_path)
    assert "strategy.tau" not in capsys.readouterr().out
