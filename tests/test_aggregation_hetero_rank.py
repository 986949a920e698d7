"""Heterogeneous-rank aggregation (FlexLoRA), with numbers worked out by hand: the product average of factors of
different ranks, its rank-R factors in decreasing order, and their truncation to each site's rank."""

from __future__ import annotations

import numpy as np
import pytest

from fedmedlora.aggregation.hetero_rank import hetero_rank_average, layout_at_rank, state_rank, truncate

A, B, HEAD = "m.q.lora_A.weight", "m.q.lora_B.weight", "m.classifier.weight"


def test_products_of_different_ranks_average_exactly() -> None:
    # site 1 (rank 2): B1 A1 = diag(3, 1); site 2 (rank 1): B2 A2 = diag(0, 0, 2) over 3 x 3. Equal weights:
    # P = diag(1.5, 0.5, 1) -> rank 3 fits the server's rank 3 exactly, singular values in order 1.5, 1, 0.5
    s1 = {A: np.eye(3, dtype=np.float32)[:2], B: np.diag([3.0, 1.0, 0.0]).astype(np.float32)[:, :2],
          HEAD: np.array([1.0], np.float32)}
    s2 = {A: np.array([[0.0, 0.0, 1.0]], np.float32), B: np.array([[0.0], [0.0], [2.0]], np.float32),
          HEAD: np.array([3.0], np.float32)}
    out, errors = hetero_rank_average([s1, s2], [1, 1], rank=3)
    np.testing.assert_allclose(out[B] @ out[A], np.diag([1.5, 0.5, 1.0]), atol=1e-6)
    assert errors[A] == pytest.approx(0.0, abs=1e-7) and out[HEAD].tolist() == [2.0]
    assert out[A].shape == (3, 3) and out[B].shape == (3, 3)
    # truncated to rank 1: the top direction (1.5 on the first axis); to rank 2: adds the third axis (1.0)
    one = truncate(out, 1)
    np.testing.assert_allclose(one[B] @ one[A], np.diag([1.5, 0.0, 0.0]), atol=1e-6)
    two = truncate(out, 2)
    np.testing.assert_allclose(two[B] @ two[A], np.diag([1.5, 0.0, 1.0]), atol=1e-6)
    assert two[HEAD] is out[HEAD] and state_rank(two) == 2


def test_truncation_error_when_the_server_rank_is_smaller() -> None:
    # P = diag(3, 4) at server rank 1 keeps 4: relative error 3 / 5
    s = {A: np.eye(2, dtype=np.float32), B: np.diag([3.0, 4.0]).astype(np.float32)}
    out, errors = hetero_rank_average([s], [1], rank=1)
    assert errors[A] == pytest.approx(0.6)
    np.testing.assert_allclose(out[B] @ out[A], np.diag([0.0, 4.0]), atol=1e-6)


def test_layouts_and_bad_ranks() -> None:
    layout = {A: (8, 5), B: (7, 8), HEAD: (3,)}
    assert layout_at_rank(layout, 2) == {A: (2, 5), B: (7, 2), HEAD: (3,)}
    with pytest.raises(ValueError, match="cannot truncate"):
        truncate({A: np.zeros((2, 5)), B: np.zeros((7, 2))}, 3)
    with pytest.raises(ValueError, match="different keys"):
        hetero_rank_average([{A: np.zeros((1, 2)), B: np.zeros((2, 1))}, {A: np.zeros((1, 2))}], [1, 1], 1)
