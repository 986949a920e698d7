"""The run-config schema: defaults, types, allowed values, cross-key rules, presets and pyproject agreement."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedmedlora.run_config import load_settings
from fedmedlora.settings import KEYS, ConfigError, defaults, flatten_toml, load_toml_overrides, parse_run_config

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "conf").glob("*.toml"))


def problems_of(overrides: dict) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides)
    return str(info.value)


def test_pyproject_lists_every_key_with_its_default():
    with open(ROOT / "pyproject.toml", "rb") as fh:
        app_config = flatten_toml(tomllib.load(fh)["tool"]["flwr"]["app"]["config"])
    assert app_config == defaults()


def test_defaults_are_valid_and_typed():
    settings = parse_run_config({})
    assert settings["lora.r"] == 8 and isinstance(settings["lora.alpha"], float)
    assert settings.lora.target_modules == "query,value"
    assert settings.target_modules == ["query", "value"]
    assert settings.clients_per_round == settings.data.num_sites == 3


def test_unknown_key_is_named_with_a_suggestion():
    message = problems_of({"lora.rank": 4})
    assert "unknown key 'lora.rank'" in message and "'lora.r'" in message


@pytest.mark.parametrize("key,value,expected", [
    ("lora.r", "8", "expected an integer"),
    ("lora.r", 2.5, "expected an integer"),
    ("lora.r", True, "expected an integer"),
    ("lora.dropout", "0.1", "expected a number"),
    ("evaluate.server", 1, "expected true or false"),
    ("model.name", 3, "expected a quoted string"),
])
def test_wrong_types_name_key_and_expected_type(key, value, expected):
    message = problems_of({key: value})
    assert f"key '{key}'" in message and expected in message


def test_int_is_accepted_for_float_keys():
    # Flower parses `--run-config "train.learning-rate-max=1"` as an int
    assert parse_run_config({"train.learning-rate-max": 1, "train.learning-rate-min": 1})["train.learning-rate-max"] == 1.0


@pytest.mark.parametrize("overrides,fragment", [
    ({"lora.r": 0}, "key 'lora.r' = 0: must be > 0"),
    ({"model.quantization": 3}, "allowed values are 0, 4, 8"),
    ({"strategy.name": "fedbogus"}, "key 'strategy.name' = 'fedbogus': allowed values are"),
    ({"strategy.clients-per-round": 5}, "key 'strategy.clients-per-round' = 5: more than the 3 sites"),
    ({"train.local-steps": 10, "train.local-epochs": 2.0}, "set exactly one of them"),
    ({"train.local-steps": 0}, "set exactly one of them"),
    ({"data.val-fraction": 0.5, "data.test-fraction": 0.5}, "data.val-fraction"),
    ({"train.learning-rate-min": 1.0}, "key 'train.learning-rate-min' = 1.0: larger than"),
    ({"data.partitioning": "random"}, "allowed values are 'iid', 'dirichlet', 'natural'"),
])
def test_impossible_values_are_refused(overrides, fragment):
    assert fragment in problems_of(overrides)


def test_every_problem_is_reported_at_once():
    error = None
    try:
        parse_run_config({"lora.r": -1, "lora.dropout": 2.0, "nope": 1})
    except ConfigError as err:
        error = err
    assert error is not None and len(error.problems) == 3


def test_cosine_learning_rate_across_rounds():
    s = parse_run_config({"num-server-rounds": 10, "train.learning-rate-max": 5e-5, "train.learning-rate-min": 1e-6})
    rates = [s.learning_rate(r) for r in range(1, 11)]
    assert rates[0] == pytest.approx(5e-5) and rates[-1] == pytest.approx(1e-6)
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[4] == pytest.approx(1e-6 + 0.5 * (5e-5 - 1e-6) * (1 + __import__("math").cos(__import__("math").pi * 4 / 9)))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.name for p in PRESETS])
def test_presets_are_valid(preset):
    load_settings(load_toml_overrides(str(preset)), source=str(preset))


def test_gpu_presets_carry_the_seed_settings():
    ft = parse_run_config(load_toml_overrides(str(ROOT / "conf/flowertune-medical.toml")))
    assert (ft.model.name, ft.model.quantization, ft.lora.r, ft.lora.alpha, ft.lora.dropout) == (
        "ContactDoctor/Bio-Medical-Llama-3-8B", 4, 32, 64.0, 0.075)
    assert ft.target_modules == ["q_proj", "v_proj"]
    assert (ft.train.batch_size, ft.data.max_length, ft.train.local_steps, ft.train.local_epochs) == (16, 512, 10, 0.0)
    assert (ft.data.num_sites, ft.clients_per_round, ft.num_server_rounds, ft.strategy.name) == (20, 2, 10, "fedavgopt")
    assert ft.learning_rate(1) == pytest.approx(5e-5) and ft.learning_rate(10) == pytest.approx(1e-6)
    assert ft.datasets == ["medalpaca/medical_meadow_medical_flashcards"]

    ie = parse_run_config(load_toml_overrides(str(ROOT / "conf/fed-medlora-ie.toml")))
    assert (ie.model.name, ie.model.quantization, ie.model.dtype) == ("meta-llama/Llama-3.1-8B", 4, "bfloat16")
    assert (ie.lora.r, ie.lora.alpha) == (16, 64.0)
    assert sorted(ie.target_modules) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                "down_proj"])
    assert (ie.train.batch_size, ie.train.learning_rate_max, ie.data.max_length) == (4, 2e-4, 800)
    assert (ie.num_server_rounds, ie.train.local_epochs, ie.train.local_steps) == (3, 2.0, 0)
    assert ie.strategy.name == "fed-medlora-plus"


def test_every_key_has_a_meaning():
    assert all(k.help and k.name.islower() for k in KEYS)
