"""state_problem: a readable reason for each kind of bad reply, None for a usable one."""

from __future__ import annotations

import numpy as np

from fedmedlora.aggregation.screening import state_problem

REFERENCE = {"l.lora_A.weight": (2, 3), "l.lora_B.weight": (4, 2)}


def _good() -> dict[str, np.ndarray]:
    return {k: np.ones(s, np.float32) for k, s in REFERENCE.items()}


def test_screening_reasons() -> None:
    nan, inf, shape, missing, extra = _good(), _good(), _good(), _good(), _good()
    nan["l.lora_A.weight"][0, 0] = np.nan
    inf["l.lora_B.weight"][1, 1] = -np.inf
    shape["l.lora_B.weight"] = np.ones((4, 3), np.float32)
    del missing["l.lora_A.weight"]
    extra["head.bias"] = np.zeros(2, np.float32)
    states = [_good(), nan, inf, shape, missing, extra, "garbage", _good()]
    problems = [state_problem(state, REFERENCE) for state in states]
    assert [i for i, p in enumerate(problems) if p is None] == [0, 7]
    assert problems[1] == "'l.lora_A.weight' has non-finite values (1 NaN, 0 Inf)"
    assert problems[2] == "'l.lora_B.weight' has non-finite values (0 NaN, 1 Inf)"
    assert problems[3] == "'l.lora_B.weight' has shape (4, 3), expected (4, 2)"
    assert problems[4] == "missing 1 key(s): 'l.lora_A.weight'"
    assert problems[5] == "1 unexpected key(s): 'head.bias'"
    assert problems[6] == "not a mapping of tensors (got str)"


def test_many_missing_keys_are_summarised() -> None:
    reference = {f"k{i}": (1,) for i in range(5)}
    assert state_problem({}, reference) == "missing 5 key(s): 'k0', 'k1', 'k2' (+2 more)"


def test_non_numeric_tensor() -> None:
    bad = _good()
    bad["l.lora_A.weight"] = np.array([["a"] * 3] * 2)
    assert "not a numeric tensor" in state_problem(bad, REFERENCE)
