"""Fed-SB's r x r adapter (lora.adapter "rxr", PEFT's PSOFT without orthogonality): only R starts at I and trains,
the layer's update is linear in R (so averaging R is exact), and the settings that cannot apply are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmedlora.job import get_job
from fedmedlora.model.adapter import adapter_state, load_adapter_state
from fedmedlora.run_config import load_settings
from fedmedlora.settings import ConfigError, parse_run_config
from helpers import TINY_NER

RUN = {**TINY_NER, "strategy.name": "fed-sb"}


def test_only_the_core_travels_and_it_starts_at_identity() -> None:
    job = get_job(parse_run_config(RUN))
    initial = job.initial_adapter()
    cores = [k for k in initial if ".psoft_R." in k]
    assert len(cores) == 12 and all(initial[k].shape == (8, 8) for k in cores)  # 6 layers x query, value
    assert all(np.array_equal(initial[k], np.eye(8)) for k in cores)
    assert set(initial) - set(cores) == {"base_model.model.classifier.weight", "base_model.model.classifier.bias"}
    assert sorted(adapter_state(job.resident().model)) == sorted(initial)  # the resident model agrees
    trainable = [n for n, p in job.resident().model.named_parameters() if p.requires_grad]
    assert all(".psoft_R." in n or "classifier" in n for n in trainable)


def test_the_update_is_linear_in_the_core_so_averaging_is_exact() -> None:
    job = get_job(parse_run_config(RUN))
    model = job.resident().model
    initial = job.initial_adapter()
    key = next(k for k in initial if ".psoft_R." in k)
    layer = model.get_submodule(key.removesuffix(".psoft_R.weight"))
    rng = np.random.default_rng(0)
    cores = [np.eye(8, dtype=np.float32) + rng.normal(0, 0.1, (8, 8)).astype(np.float32) for _ in range(2)]
    deltas = []
    for core in cores + [0.25 * cores[0] + 0.75 * cores[1]]:
        load_adapter_state(model, {**initial, key: core})
        with torch.no_grad():
            deltas.append(layer.get_delta_weight("default").numpy())
    np.testing.assert_allclose(deltas[2], 0.25 * deltas[0] + 0.75 * deltas[1], atol=1e-5)
    assert np.abs(deltas[0]).max() > 1e-3  # not trivially zero
    load_adapter_state(model, initial)


def test_settings_that_cannot_apply_are_refused() -> None:
    with pytest.raises(ConfigError, match="Fed-SB trains the r x r core only"):
        load_settings({"strategy.name": "fed-sb", "lora.adapter": "lora"})
    with pytest.raises(ConfigError, match="the r x r adapter has no A and B to freeze"):
        load_settings({"strategy.name": "ffa-lora", "lora.adapter": "rxr"})
    assert load_settings({"strategy.name": "fedavg", "lora.adapter": "rxr"}).adapter_kind == "rxr"
    assert load_settings({"strategy.name": "fedavg"}).adapter_kind == "lora"
