"""`fedmedlora run`: merging and validating run config before Flower starts, paths made absolute."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.common.config import flatten_dict

from fedmedlora.launch.launcher import absolutize_paths, app_defaults, parse_overrides, run, write_flat_toml
from fedmedlora.settings import ConfigError, defaults

ROOT = Path(__file__).resolve().parents[1]


def test_presets_and_pairs_merge_in_order(tmp_path):
    merged = parse_overrides([str(ROOT / "conf/ner-dirichlet.toml"), "data.dirichlet-alpha=2.0 lora.r=4",
                              'strategy.name="fed-medlora"'])
    assert merged["data.partitioning"] == "dirichlet" and merged["data.partition-by"] == "label"
    assert merged["data.dirichlet-alpha"] == 2.0 and merged["lora.r"] == 4
    assert merged["strategy.name"] == "fed-medlora"


def test_missing_preset_is_named():
    with pytest.raises(ConfigError, match="--run-config conf/nope.toml: no such file"):
        parse_overrides(["conf/nope.toml"])


def test_relative_paths_become_absolute(tmp_path):
    (tmp_path / "site_a.tsv").write_text("x\tO\n")
    config = absolutize_paths({"data.datasets": "ncbi_disease,site_a.tsv", "model.name": "builtin:minilm-l6",
                               "run.results-dir": "out"}, tmp_path)
    assert config["data.datasets"] == f"ncbi_disease,{tmp_path / 'site_a.tsv'}"
    assert config["run.results-dir"] == str(tmp_path / "out")
    assert config["model.name"] == "builtin:minilm-l6"


def test_written_run_config_reads_back_as_flower_reads_it(tmp_path):
    import tomllib

    config = {**defaults(), "lora.alpha": 32.0, "run.name": "x y", "data.datasets": "a,b"}
    write_flat_toml(config, tmp_path / "c.toml")
    with open(tmp_path / "c.toml", "rb") as fh:
        assert flatten_dict(tomllib.load(fh)) == config


def test_app_defaults_are_the_pyproject_block():
    assert app_defaults(ROOT) == defaults()


@pytest.mark.parametrize("override,message", [
    ("lora.rank=4", "unknown key 'lora.rank'; did you mean 'lora.r'"),
    ("strategy.clients-per-round=9", "key 'strategy.clients-per-round' = 9: more than the 3 sites"),
    ("model.quantization=8", "model.quantization = 8 needs a CUDA GPU"),
    # 4-bit runs on the CPU for causal LMs (tests/test_qlora_cpu.py); the default model is an encoder
    ("model.quantization=4", "model.quantization = 4 on the CPU (this machine sees no CUDA GPU) is supported for "
                             "causal LMs only"),
    ('model.name="./no/such/model.gguf"', "GGUF file './no/such/model.gguf' does not exist"),
])
def test_bad_run_config_exits_2_before_flower_starts(capsys, override, message):
    import time

    start = time.time()
    code = run(str(ROOT), [override])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert time.time() - start < 30
