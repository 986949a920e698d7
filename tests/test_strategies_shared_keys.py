"""FFA-LoRA and FedSA-LoRA through Flower's configure_train / aggregate_train: only the shared tensors travel each
way, a reply carrying a kept tensor is refused, and the global keeps the rest. The pure rule, with numbers by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmedlora.aggregation.key_roles import FROZEN, PERSONAL, SHARED, key_role, keys_with_role
from fedmedlora.aggregation.shared_keys import aggregate_shared

from test_strategies import A, B, aggregate, make, reply, send

HEAD = "m.classifier.weight"


def state(a: list[list[float]], b: list[list[float]], head: float = 0.0) -> dict[str, np.ndarray]:
    return {A: np.array(a, np.float32), B: np.array(b, np.float32), HEAD: np.array([[head]], np.float32)}


def test_key_roles() -> None:
    keys = [A, B, HEAD, "m.embed.lora_embedding_A.default", "m.embed.lora_embedding_B"]
    assert [key_role(k, "all") for k in keys] == [SHARED] * 5
    assert [key_role(k, "b-only") for k in keys] == [FROZEN, SHARED, SHARED, FROZEN, SHARED]
    assert [key_role(k, "a-only") for k in keys] == [SHARED, PERSONAL, SHARED, SHARED, PERSONAL]
    assert keys_with_role(keys, "b-only", SHARED) == [B, HEAD, "m.embed.lora_embedding_B"]
    with pytest.raises(ValueError, match="unknown key scheme"):
        key_role(A, "nope")


def test_ffa_averaging_is_exact() -> None:
    # one shared A = [[1, 2]]; B_1 = [[1], [0]], B_2 = [[3], [2]], weights 1/4, 3/4 -> B = [[2.5], [1.5]]
    a = np.array([[1.0, 2.0]], np.float32)
    glob = {A: a, B: np.zeros((2, 1), np.float32)}
    clients = [{B: np.array([[1.0], [0.0]], np.float32)}, {B: np.array([[3.0], [2.0]], np.float32)}]
    out = aggregate_shared(glob, clients, [1, 3], "b-only")
    np.testing.assert_array_equal(out[B], [[2.5], [1.5]])
    np.testing.assert_array_equal(out[A], a)
    exact = 0.25 * clients[0][B] @ a + 0.75 * clients[1][B] @ a  # the average of the updates B_i A
    np.testing.assert_allclose(out[B] @ out[A], exact)
    assert list(out) == [A, B]


def test_fedsa_keeps_the_global_b_and_refuses_a_client_b() -> None:
    glob = {A: np.zeros((1, 2), np.float32), B: np.full((2, 1), 7.0, np.float32)}
    out = aggregate_shared(glob, [{A: np.array([[1.0, 1.0]], np.float32)}, {A: np.array([[3.0, 5.0]], np.float32)}],
                           [1, 1], "a-only")
    np.testing.assert_array_equal(out[A], [[2.0, 3.0]])
    np.testing.assert_array_equal(out[B], glob[B])
    with pytest.raises(ValueError, match="exactly the shared tensors"):
        aggregate_shared(glob, [{A: glob[A], B: glob[B]}], [1], "a-only")


def test_ffa_strategy_sends_and_takes_only_b_and_the_head(tmp_path: Path) -> None:
    initial = state([[1.0, 2.0]], [[0.0], [0.0]], head=0.5)
    strategy, recorder = make({"strategy.name": "ffa-lora"}, initial, tmp_path, sites=3)
    out = send(strategy, initial, 3)
    assert [sorted(m.content["arrays"]) for m in out] == [sorted([B, HEAD])] * 3
    assert out[0].content["config"]["adapter-reference"] == strategy.reference_digest  # sites rebuild A
    sent_a = {A: initial[A], B: np.array([[1.0], [1.0]], np.float32), HEAD: initial[HEAD]}
    result = aggregate(strategy, [
        reply(out[0], {B: np.array([[1.0], [0.0]], np.float32), HEAD: np.array([[1.0]], np.float32)}),
        reply(out[1], {B: np.array([[3.0], [2.0]], np.float32), HEAD: np.array([[2.0]], np.float32)}, examples=3),
        reply(out[2], sent_a)])  # a reply that sends A is refused
    np.testing.assert_array_equal(result[B], [[2.5], [1.5]])
    np.testing.assert_array_equal(result[HEAD], [[1.75]])
    np.testing.assert_array_equal(result[A], initial[A])  # never moves
    log = recorder.round(1)
    assert log["usable"] == 2 and "1 unexpected key(s): 'm.layers.0.query.lora_A.weight'" in log["excluded"][0][
        "reason"]
    # the next round sends the new B, still no A
    assert sorted(strategy.wire_record(strategy._wire[0])) == sorted([B, HEAD])


def test_fedsa_strategy_sends_only_a(tmp_path: Path) -> None:
    initial = state([[1.0, 2.0]], [[0.0], [0.0]])
    strategy, _ = make({"strategy.name": "fedsa-lora"}, initial, tmp_path, sites=3)
    out = send(strategy, initial, 3)
    assert sorted(out[0].content["arrays"]) == sorted([A, HEAD])
    result = aggregate(strategy, [reply(m, {A: np.array([[float(i), 0.0]], np.float32), HEAD: initial[HEAD]})
                                  for i, m in enumerate(out)])
    np.testing.assert_array_equal(result[A], [[1.0, 0.0]])
    np.testing.assert_array_equal(result[B], initial[B])  # the server never holds a site's B


def test_schemes_refuse_product_aggregation() -> None:
    from fedmedlora.run_config import load_settings
    from fedmedlora.settings import ConfigError

    for name in ("ffa-lora", "fedsa-lora"):
        with pytest.raises(ConfigError, match="product aggregation applies to"):
            load_settings({"strategy.name": name, "strategy.lora-aggregation": "product"})


