"""Exact LoRA aggregation: factor vs product averaging, QR+core SVD vs dense SVD, truncation error."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedmedlora.aggregation.lora_product import lora_pairs, product_average_with_errors
from fedmedlora.aggregation.weighted import weighted_average

A, B = "m.layers.0.q_proj.lora_A.weight", "m.layers.0.q_proj.lora_B.weight"


def _lora(b: list[list[float]], a: list[list[float]], **extra: np.ndarray) -> dict[str, np.ndarray]:
    return {A: np.array(a, np.float32), B: np.array(b, np.float32), **extra}


def _product(state: dict[str, np.ndarray]) -> np.ndarray:
    return state[B].astype(np.float64) @ state[A].astype(np.float64)


def test_factor_average_differs_product_rule_exact_when_rank_fits() -> None:
    # r = 1; client 2 is client 1 scaled by 2 in both factors: products diag(1, 0) and diag(4, 0), average diag(2.5, 0)
    states = [_lora([[1], [0]], [[1, 0]]), _lora([[2], [0]], [[2, 0]])]
    factor = weighted_average(states, [1, 1])
    np.testing.assert_allclose(_product(factor), [[2.25, 0], [0, 0]])  # 1.5 * 1.5: not the average
    exact, errors = product_average_with_errors(states, [1, 1])
    np.testing.assert_allclose(_product(exact), [[2.5, 0], [0, 0]], atol=1e-6)
    assert errors == {A: pytest.approx(0.0, abs=1e-12)}
    # singular value split evenly: B = (sqrt 2.5, 0)^T, A = (sqrt 2.5, 0) up to a common sign
    np.testing.assert_allclose(np.abs(exact[B][:, 0]), [math.sqrt(2.5), 0], atol=1e-6)
    np.testing.assert_allclose(np.abs(exact[A][0]), [math.sqrt(2.5), 0], atol=1e-6)


def test_truncation_error_when_average_exceeds_rank() -> None:
    # r = 1; products diag(1, 0) and diag(0, 1); average 0.5 I has rank 2: best rank-1 error 0.5 of norm 0.5 sqrt 2
    states = [_lora([[1], [0]], [[1, 0]]), _lora([[0], [1]], [[0, 1]])]
    np.testing.assert_allclose(_product(weighted_average(states, [1, 1])), np.full((2, 2), 0.25))
    exact, errors = product_average_with_errors(states, [1, 1])
    assert errors[A] == pytest.approx(1 / math.sqrt(2), rel=1e-9)
    assert np.linalg.norm(0.5 * np.eye(2) - _product(exact)) == pytest.approx(0.5, rel=1e-6)


def _random_clients(k: int, r: int, out: int, inp: int, seed: int, shared_a: bool = False
                    ) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    a_shared = rng.normal(size=(r, inp))
    states = []
    for _ in range(k):
        a = a_shared if shared_a else rng.normal(size=(r, inp))
        states.append({A: a.astype(np.float32), B: rng.normal(size=(out, r)).astype(np.float32),
                       "head.weight": rng.normal(size=(2, out)).astype(np.float32)})
    return states


@pytest.mark.parametrize("k, r, out, inp", [(3, 4, 40, 30), (3, 2, 5, 4), (4, 3, 64, 6)])
def test_matches_dense_truncated_svd(k: int, r: int, out: int, inp: int) -> None:
    states = _random_clients(k, r, out, inp, seed=k * 100 + out)
    weights = np.array([1.0, 2.0, 3.0, 4.0][:k])
    w = weights / weights.sum()
    dense = sum(wi * _product(s) for wi, s in zip(w, states))
    u, s, vt = np.linalg.svd(dense)
    best = (u[:, :r] * s[:r]) @ vt[:r]
    exact, errors = product_average_with_errors(states, weights)
    np.testing.assert_allclose(_product(exact), best, atol=1e-5 * s[0])
    assert errors[A] == pytest.approx(np.sqrt(np.sum(s[r:] ** 2) / np.sum(s ** 2)), rel=1e-9)
    assert exact[A].shape == (r, inp) and exact[B].shape == (out, r) and exact[A].dtype == np.float32
    # balanced split: B^T B = A A^T = diag(S_r)
    np.testing.assert_allclose(exact[B].T.astype(np.float64) @ exact[B], np.diag(s[:r]), atol=1e-5 * s[0])
    np.testing.assert_allclose(exact[A].astype(np.float64) @ exact[A].T, np.diag(s[:r]), atol=1e-5 * s[0])
    # the non-LoRA head is a plain weighted average
    np.testing.assert_allclose(exact["head.weight"], sum(wi * s["head.weight"] for wi, s in zip(w, states)),
                               rtol=1e-6)


def test_shared_a_is_reproduced_exactly() -> None:
    # with one A for all clients the average of products is (sum w_i B_i) A: rank <= r, and factor averaging is exact
    states = _random_clients(5, 4, 32, 24, seed=7, shared_a=True)
    weights = [5, 1, 1, 2, 1]
    exact, errors = product_average_with_errors(states, weights)
    factor = weighted_average(states, weights)
    np.testing.assert_allclose(_product(exact), _product(factor), atol=1e-4)
    assert errors[A] < 1e-7


def test_single_client_keeps_its_product() -> None:
    states = _random_clients(1, 4, 16, 12, seed=8)
    exact, errors = product_average_with_errors(states, [3.0])
    np.testing.assert_allclose(_product(exact), _product(states[0]), atol=1e-4)
    assert errors[A] < 1e-7


def test_zero_b_keeps_a_trainable() -> None:
    # round 0: B = 0 everywhere, so the average of products is 0; B stays 0 and A gets full-rank rows, not zeros
    states = _random_clients(2, 3, 8, 10, seed=9)
    for s in states:
        s[B][:] = 0.0
    exact, errors = product_average_with_errors(states, [1, 1])
    assert errors[A] == 0.0 and not np.any(exact[B])
    assert np.linalg.matrix_rank(exact[A]) == 3
    rms = np.sqrt(np.mean([np.sum(s[A].astype(np.float64) ** 2) for s in states]) / 3)
    np.testing.assert_allclose(np.linalg.norm(exact[A], axis=1), rms, rtol=1e-5)


def test_pairs_and_key_order() -> None:
    keys = ["x.lora_A.weight", "head.bias", "x.lora_B.weight", "emb.lora_embedding_A", "emb.lora_embedding_B"]
    assert lora_pairs(keys) == [("x.lora_A.weight", "x.lora_B.weight"),
                                ("emb.lora_embedding_A", "emb.lora_embedding_B")]
    states = [_lora([[1], [0]], [[1, 0]], **{"head.bias": np.array([1.0], np.float32)}),
              _lora([[0], [1]], [[0, 1]], **{"head.bias": np.array([3.0], np.float32)})]
    out = product_average_with_errors(states, [1, 1])[0]
    assert list(out) == list(states[0])
    assert out["head.bias"][0] == 2.0


def test_unpaired_and_non_matrix_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="no matching"):
        lora_pairs(["x.lora_A.weight"])
    with pytest.raises(ValueError, match="without a matching A"):
        lora_pairs(["x.lora_B.weight"])
    conv = {A: np.zeros((2, 3, 1, 1), np.float32), B: np.zeros((4, 2, 1, 1), np.float32)}
    with pytest.raises(ValueError, match="A \\(r x in\\)"):
        product_average_with_errors([conv], [1])
