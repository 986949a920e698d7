"""FlexLoRA through Flower's configure_train / aggregate_train: replies of different ranks, screened against the rank
they declare, combined in the product space; each node is then sent its own rank's factors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmedlora.run_config import load_settings
from fedmedlora.settings import ConfigError
from fedmedlora.wire import from_array_record

from test_strategies import aggregate, make, reply, send

A, B = "m.q.lora_A.weight", "m.q.lora_B.weight"
INITIAL = {A: np.ones((2, 3), np.float32), B: np.zeros((3, 2), np.float32)}
FLEX = {"strategy.name": "flexlora", "lora.r": 2, "lora.site-ranks": "2,1"}


def test_ranks_are_screened_combined_and_sent_back(tmp_path: Path) -> None:
    strategy, recorder = make({**FLEX, "lora.site-ranks": "2,1,1,1"}, INITIAL, tmp_path, sites=4)
    out = send(strategy, INITIAL, 4)
    assert [m.content["arrays"][A].shape for m in out] == [(2, 3)] * 4  # ranks not known yet: rank 2
    # node 1 (rank 2): B A = diag(3, 1) on the first two axes; node 2 (rank 1): 2 on the third axis
    r2 = {A: np.eye(3, dtype=np.float32)[:2], B: np.diag([3.0, 1.0, 0.0]).astype(np.float32)[:, :2]}
    r1 = {A: np.array([[0.0, 0.0, 1.0]], np.float32), B: np.array([[0.0], [0.0], [2.0]], np.float32)}
    result = aggregate(strategy, [reply(out[0], r2, **{"lora-rank": 2}), reply(out[1], r1, **{"lora-rank": 1}),
                                  reply(out[2], r2, **{"lora-rank": 1}),  # shapes of rank 2, says rank 1
                                  reply(out[3], r1)])  # says nothing
    # P = diag(1.5, 0.5, 1): the server keeps rank 2, the top two directions 1.5 and 1.0
    np.testing.assert_allclose(result[B] @ result[A], np.diag([1.5, 0.0, 1.0]), atol=1e-3)  # float16 replies
    log = recorder.round(1)
    assert log["usable"] == 2 and log["site-ranks"] == {"site 0": 2, "site 1": 1}
    reasons = [e["reason"] for e in log["excluded"]]
    assert "has shape (2, 3), expected (1, 3)" in reasons[0]
    assert "metric 'lora-rank' missing or not a rank in 1..lora.r = 2: None" in reasons[1]
    assert log["lora-product"]["max-truncation-error"] == pytest.approx(0.5 / np.sqrt(1.5 ** 2 + 1 + 0.25), abs=1e-3)
    out = send(strategy, result, 2, server_round=2)
    sent = {m.metadata.dst_node_id: from_array_record(m.content["arrays"]) for m in out}
    assert sent[1][A].shape == (2, 3) and sent[2][A].shape == (1, 3)  # node 2 gets its rank
    np.testing.assert_allclose(sent[2][B] @ sent[2][A], np.diag([1.5, 0.0, 0.0]), atol=2e-3)


def test_site_ranks_are_checked_up_front() -> None:
    with pytest.raises(ConfigError, match="sites of different ranks need a strategy that aggregates them "
                                          r"\(flexlora\)"):
        load_settings({"strategy.name": "fedavg", "lora.site-ranks": "8,8,4"})
    with pytest.raises(ConfigError, match=r"2 ranks for 3 sites"):
        load_settings({"strategy.name": "flexlora", "lora.site-ranks": "8,4"})
    with pytest.raises(ConfigError, match=r"ranks must be in 1..lora.r = 8 \(the server's rank\); got \[16\]"):
        load_settings({"strategy.name": "flexlora", "lora.site-ranks": "16,8,4"})
    with pytest.raises(ConfigError, match="expected comma-separated integers"):
        load_settings({"strategy.name": "flexlora", "lora.site-ranks": "8,x,4"})


def test_a_site_with_no_place_in_the_federation_is_not_given_another_sites_rank() -> None:
    from flwr.app import Context, RecordDict

    from fedmedlora.site_adapter import site_rank

    settings = load_settings({"strategy.name": "flexlora", "lora.r": 8, "lora.site-ranks": "8,4,2"})
    context = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    assert [site_rank(settings, context, k) for k in range(3)] == [8, 4, 2]
    with pytest.raises(ValueError, match=r"place in the federation is -1 .*set node config 'lora-rank'"):
        site_rank(settings, context, -1)  # was: the last site's rank, silently
    context.node_config["lora-rank"] = 4
    assert site_rank(settings, context, -1) == 4
