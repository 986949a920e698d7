"""Poisoned replies through the real strategies (`configure_train` / `aggregate_train`): a client that claims a huge
weight is capped at its site's known count, an update scaled x 1e4 is clipped or left out, and Flower's Krum,
MultiKrum and Bulyan leave an outlier out. Every cap, clip and exclusion is recorded with its reason.

Adapters are one scalar `w` or a 2 x 2 LoRA pair; replies travel in float16 with values float16 holds exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fedmedlora.aggregation.influence import bound_norms, capped_weight, scale_update, update_norm
from fedmedlora.launch.grid import NodeIdsGrid, set_task_identity
from fedmedlora.recorder import RunRecorder
from fedmedlora.run_config import load_settings
from fedmedlora.settings import ConfigError
from fedmedlora.strategies import build_strategy
from fedmedlora.strategies.site_counts import ReportedCounts
from fedmedlora.wire import from_array_record, to_array_record

SITE_EXAMPLES = [100.0, 100.0, 100.0]


def scalar(value: float) -> dict[str, np.ndarray]:
    return {"w": np.array([value], np.float32)}


def site_counts(examples: list[float] = SITE_EXAMPLES) -> ReportedCounts:
    """What nodes 1, 2, 3 (sites 0, 1, 2) reported before round 1."""
    return ReportedCounts({node: {"num-examples": n, "num-tokens": 1000.0} for node, n in enumerate(examples, 1)})


def make(overrides: dict[str, Any], tmp_path: Path, sites: int = 3, counts: Any = "reported") -> tuple[Any, Any]:
    settings = load_settings({"data.num-sites": sites, **overrides})
    recorder = RunRecorder(tmp_path)
    counts = site_counts() if counts == "reported" else counts
    return build_strategy(settings, recorder, scalar(0.0), None, counts), recorder


def send(strategy: Any, global_value: float, sites: int, server_round: int = 1) -> list[Message]:
    set_task_identity(1, 0)
    out = strategy.configure_train(server_round, to_array_record(scalar(global_value), "float32"), ConfigRecord(),
                                   NodeIdsGrid(sites))
    return sorted(out, key=lambda m: m.metadata.dst_node_id)


def reply(out: Message, value: float, examples: float = 100, site: int | None = None) -> Message:
    set_task_identity(1, out.metadata.dst_node_id)
    site = out.metadata.dst_node_id - 1 if site is None else site
    return Message(RecordDict({"arrays": to_array_record(scalar(value), "float16"),
                               "metrics": MetricRecord({"num-examples": examples, "num-tokens": 1000, "site": site,
                                                        "train-loss": 1.0})}), reply_to=out)


def aggregate(strategy: Any, replies: list[Message], server_round: int = 1) -> float | None:
    set_task_identity(1, 0)
    arrays, _ = strategy.aggregate_train(server_round, replies)
    return None if arrays is None else float(from_array_record(arrays)["w"][0])


# --- the maths ---------------------------------------------------------------------------------------------------

def test_influence_bounds_by_hand() -> None:
    assert capped_weight(1e9, 100) == 100 and capped_weight(50, 100) == 50
    with pytest.raises(ValueError, match="positive"):
        capped_weight(10, 0)
    reference = {"a": np.zeros(2, np.float32), "b": np.ones(1, np.float32)}
    state = {"a": np.array([3.0, 0.0], np.float32), "b": np.array([5.0], np.float32)}
    assert update_norm(state, reference) == pytest.approx(5.0)  # ||(3, 0, 4)||
    halfway = scale_update(state, reference, 0.5)
    assert halfway["a"].tolist() == [1.5, 0.0] and halfway["b"].tolist() == [3.0]
    decisions = bound_norms([1.0, 2.0, 100.0], k=3.0)  # median 2, bound 6
    assert [d.factor for d in decisions] == [1.0, 1.0, pytest.approx(0.06)]


# --- the weight cap ----------------------------------------------------------------------------------------------

CAP_ONLY = {"strategy.norm-bound": 0.0}  # the weight-cap tests leave the norm bound out (4 > 3 x median 1)


def test_a_claimed_billion_examples_is_capped_at_the_site_count(tmp_path: Path) -> None:
    strategy, recorder = make(CAP_ONLY, tmp_path)
    out = send(strategy, 0.0, 3)
    # without the cap: (1e9 * 4 + 100 * 1 + 100 * 1) / (1e9 + 200) ~ 4; capped: all weigh 100 -> (1 + 1 + 4) / 3 = 2
    result = aggregate(strategy, [reply(out[0], 1.0), reply(out[1], 1.0), reply(out[2], 4.0, examples=1e9)])
    assert result == pytest.approx(2.0)
    log = recorder.round(1)
    assert log["clips"] == 1 and log["exclusions"] == 0
    assert "claimed num-examples 1e+09 is more than the 100 known for site 2: capped" in log["clipped"][0]["reason"]
    assert log["clients"][2]["clipped"] and log["weights"] == {str(n): pytest.approx(1 / 3) for n in (1, 2, 3)}


def test_claiming_less_than_the_count_is_allowed(tmp_path: Path) -> None:
    strategy, recorder = make(CAP_ONLY, tmp_path)
    out = send(strategy, 0.0, 3)
    result = aggregate(strategy, [reply(out[0], 1.0, 50), reply(out[1], 1.0, 50), reply(out[2], 4.0, 100)])
    assert result == pytest.approx((50 + 50 + 400) / 200) and recorder.round(1)["clips"] == 0


def test_reported_counts_plug_in_for_a_deployment(tmp_path: Path) -> None:
    strategy, recorder = make({}, tmp_path, counts=ReportedCounts({1: {"num-examples": 10}, 2: {"num-examples": 30}}))
    out = send(strategy, 0.0, 3)
    result = aggregate(strategy, [reply(out[0], 1.0, 1e6), reply(out[1], 3.0, 30), reply(out[2], 100.0)])
    assert result == pytest.approx((10 * 1 + 30 * 3) / 40)  # node 3 reported nothing before round 1: left out
    assert "reported no counts before round 1" in recorder.round(1)["excluded"][0]["reason"]


def test_the_cap_can_be_switched_off(tmp_path: Path) -> None:
    strategy, _ = make({**CAP_ONLY, "strategy.weight-cap": False}, tmp_path)
    out = send(strategy, 0.0, 3)
    result = aggregate(strategy, [reply(out[0], 1.0), reply(out[1], 1.0), reply(out[2], 4.0, examples=1e9)])
    assert result == pytest.approx(4.0, rel=1e-6)


# --- the norm bound ----------------------------------------------------------------------------------------------

def test_an_update_scaled_1e4_is_clipped_to_k_times_the_median(tmp_path: Path) -> None:
    strategy, recorder = make({"strategy.norm-bound": 3.0}, tmp_path)
    out = send(strategy, 0.0, 3)
    # updates 0.25, 0.5 and 0.25 x 1e4: median 0.5, bound 1.5: the poisoned one is clipped to 1.5
    result = aggregate(strategy, [reply(out[0], 0.25), reply(out[1], 0.5), reply(out[2], 2500.0)])
    assert result == pytest.approx((0.25 + 0.5 + 1.5) / 3)
    log = recorder.round(1)
    assert log["clips"] == 1 and [c["node"] for c in log["clipped"]] == [3]
    assert "update norm 2500 > bound 1.5 (strategy.norm-bound = 3 x the round's median): clipped" in (
        log["clipped"][0]["reason"])
    assert [c["update-norm"] for c in log["clients"]] == pytest.approx([0.25, 0.5, 2500.0])


def test_norm_bound_can_reject_instead(tmp_path: Path) -> None:
    strategy, recorder = make({"strategy.norm-bound": 3.0, "strategy.norm-action": "reject"}, tmp_path)
    out = send(strategy, 0.0, 3)
    result = aggregate(strategy, [reply(out[0], 0.25), reply(out[1], 0.5), reply(out[2], 2500.0)])
    assert result == pytest.approx((0.25 + 0.5) / 2)
    assert recorder.round(1)["exclusions"] == 1 and recorder.round(1)["usable"] == 2


def test_the_poisoning_of_the_issue_is_bounded(tmp_path: Path) -> None:
    """The issue's attack: num-examples = 1e9 and the update scaled x 1e4, next to honest updates 0.25 and 0.5."""
    results = {}
    for name, overrides in [("unscreened", {"strategy.weight-cap": False, "strategy.norm-bound": 0.0}),
                            ("cap", {"strategy.norm-bound": 0.0}), ("defaults", {}),
                            ("cap and a loose norm bound", {"strategy.norm-bound": 10.0})]:
        strategy, _ = make(overrides, tmp_path)
        out = send(strategy, 0.0, 3)
        results[name] = aggregate(strategy, [reply(out[0], 0.25), reply(out[1], 0.5),
                                             reply(out[2], 2500.0, examples=1e9)])
    assert results["unscreened"] == pytest.approx(2500.0, rel=1e-6)  # the poisoner owns the average
    assert results["cap"] == pytest.approx((0.25 + 0.5 + 2500.0) / 3)  # one vote in three
    assert results["defaults"] == pytest.approx((0.25 + 0.5 + 3 * 0.5) / 3)  # and one bounded to 3 x the median
    assert results["cap and a loose norm bound"] == pytest.approx((0.25 + 0.5 + 10 * 0.5) / 3)


# --- Krum, MultiKrum, Bulyan -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, overrides, sites, expected, selected", [
    # Krum (f = 0, n = 3): each update is scored by its squared distance to its n - f - 2 = 1 nearest other:
    # 0.75 and 1.0 both score 0.0625, the outlier ~6e6; the first of the tie is kept
    ("krum", {}, 3, 0.75, [1]),
    # MultiKrum with f = 1 needs n > 4: five sites; it averages the n - f = 4 best, the outlier left out
    ("multikrum", {"strategy.malicious-nodes": 1}, 5, (0.75 + 1.0 + 0.75 + 1.0) / 4, [1, 2, 3, 4]),
    # Bulyan with f = 1 needs n >= 7: selects n - 2f = 5, then per coordinate the mean of the n - 4f = 3 values
    # nearest the median of the selected
    ("bulyan", {"strategy.malicious-nodes": 1}, 7, 1.0, None),
])
def test_robust_rules_leave_the_outlier_out(name: str, overrides: dict, sites: int, expected: float,
                                            selected: list[int] | None, tmp_path: Path) -> None:
    strategy, recorder = make({"strategy.name": name, "strategy.weight-cap": False, "strategy.norm-bound": 0.0,
                               **overrides}, tmp_path, sites)
    out = send(strategy, 0.0, sites)
    values = [0.75, 1.0, 0.75, 1.0, 1.0, 1.25, 1.0][:sites - 1] + [2500.0]
    result = aggregate(strategy, [reply(m, v) for m, v in zip(out, values)])
    assert result == pytest.approx(expected)
    kept = recorder.round(1)["krum-selected"]
    assert sites not in kept  # the outlier's node
    if selected is not None:
        assert sorted(kept) == selected


@pytest.mark.parametrize("overrides, fragment", [
    ({"strategy.name": "krum", "strategy.malicious-nodes": 1}, "krum needs more than 2f + 2 = 4 replies a round"),
    ({"strategy.name": "bulyan", "strategy.malicious-nodes": 1}, "bulyan needs at least 4f + 3 = 7 replies"),
    ({"strategy.name": "multikrum", "strategy.krum-select": 4}, "key 'strategy.krum-select' = 4: at most n - f = 3"),
    ({"strategy.norm-action": "ignore"}, "key 'strategy.norm-action' = 'ignore': allowed values are 'clip', 'reject'"),
])
def test_robust_settings_are_refused_up_front(overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match="invalid run config") as info:
        load_settings({"data.num-sites": 3, **overrides})
    assert fragment in str(info.value)
