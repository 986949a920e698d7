"""An adapter given to eval with another base model than it was trained on is refused before any weights load, with a
message naming both; the same base under another name (its folder, its GGUF file) is accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedmedlora.model.adapter import checkpoint_info, initial_adapter_state, lora_config, save_checkpoint
from fedmedlora.model.base_identity import adapter_base_problem
from fedmedlora.evaluation import cli, eval_model
from fedmedlora.model.loading import load_config, resolve_model_source
from fedmedlora.settings import parse_run_config

from helpers import TINY_INSTRUCT, TINY_NER

MICRO = "builtin:tiny-llama-micro"


def _checkpoint(folder: Path, overrides: dict) -> Path:
    """A real PEFT checkpoint as the ServerApp writes it (round-0 adapter: no training needed)."""
    settings = parse_run_config(overrides)
    family = "causal" if "llama" in settings.model.name else "encoder"
    labels = ["O", "B-Disease", "I-Disease"] if family == "encoder" else []
    head = "token" if family == "encoder" else ""
    state = initial_adapter_state(settings, head, len(labels) or None, seed=0)
    return save_checkpoint(folder, state, lora_config(settings, head, base_model_name_or_path=settings.model.name),
                           extra=checkpoint_info(settings, family, labels, 0))


@pytest.fixture(scope="module")
def micro_checkpoint(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "peft_0", TINY_INSTRUCT)


def _refuse_to_load(*args, **kwargs):
    raise AssertionError("weights were loaded although the adapter does not fit the base")


def _eval(*flags: str) -> int:
    return cli.main(["--quantization", "0", "--device", "cpu", "--no-progress", *flags])


def test_checkpoints_record_the_base_by_name_and_architecture(micro_checkpoint):
    info = json.loads((micro_checkpoint / "fedmedlora.json").read_text())
    assert info["base-model"] == MICRO
    assert info["base-model-config"] == {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                                         "num_attention_heads": 4, "num_key_value_heads": 4,
                                         "intermediate_size": 176, "vocab_size": 2048}
    assert (info["round"], info["task"], info["family"], info["max-length"]) == (0, "instruct", "causal", 96)


def test_qa_eval_refuses_an_adapter_of_another_base_naming_both(micro_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(eval_model, "load_model_for_eval", _refuse_to_load)
    assert _eval("--base-model-name-path", "builtin:tiny-llama", "--peft-path", str(micro_checkpoint),
                 "--datasets", "medqa", "--limit", "2", "--output-dir", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert f"the adapter {micro_checkpoint} was trained on base model '{MICRO}' (llama, hidden 64, layers 2" in err
    assert "but the base given is 'builtin:tiny-llama' (llama, hidden 256, layers 4" in err
    assert "differ in hidden_size, num_hidden_layers" in err and "vocab_size" in err
    assert not (tmp_path / "out").exists()


def test_the_same_base_under_another_name_is_accepted(micro_checkpoint, tmp_path):
    folder = resolve_model_source(MICRO)  # the built folder, named by its path
    assert adapter_base_problem(micro_checkpoint, folder, load_config(folder)) is None
    assert _eval("--base-model-name-path", folder, "--peft-path", str(micro_checkpoint), "--datasets", "medqa",
                 "--limit", "2", "--mode", "loglik", "--output-dir", str(tmp_path / "out")) == 0


def test_a_checkpoint_naming_its_base_only_is_checked_through_that_base(micro_checkpoint, tmp_path, monkeypatch,
                                                                       capsys):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (old / name).write_bytes((micro_checkpoint / name).read_bytes())
    (old / "fedmedlora.json").write_text(json.dumps({"round": 3, "task": "instruct", "base-model": MICRO}))
    monkeypatch.setattr(eval_model, "load_model_for_eval", _refuse_to_load)
    assert _eval("--base-model-name-path", "builtin:tiny-llama", "--peft-path", str(old), "--datasets", "medqa",
                 "--output-dir", str(tmp_path / "out")) == 2
    assert f"trained on base model '{MICRO}'" in capsys.readouterr().err


def test_an_adapter_whose_base_cannot_be_looked_up_gets_a_clear_error_not_a_peft_traceback(micro_checkpoint,
                                                                                          tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    config = json.loads((micro_checkpoint / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "nobody/not-in-the-cache"  # offline: no config to compare with
    (plain / "adapter_config.json").write_text(json.dumps(config))
    (plain / "adapter_model.safetensors").write_bytes((micro_checkpoint / "adapter_model.safetensors").read_bytes())
    assert _eval("--base-model-name-path", "builtin:tiny-llama", "--peft-path", str(plain), "--datasets", "medqa",
                 "--limit", "1", "--output-dir", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert f"--peft-path {plain} does not fit --base-model-name-path 'builtin:tiny-llama'" in err
    assert "size mismatch" in err and "Traceback" not in err


def test_ner_eval_refuses_an_encoder_adapter_on_a_causal_base(tmp_path, monkeypatch, capsys):
    checkpoint = _checkpoint(tmp_path / "peft_0", TINY_NER)
    assert json.loads((checkpoint / "fedmedlora.json").read_text())["base-model-config"]["model_type"] == "bert"
    monkeypatch.setattr(eval_model, "load_model_for_eval", _refuse_to_load)
    assert _eval("--task", "ner", "--base-model-name-path", MICRO, "--peft-path", str(checkpoint),
                 "--datasets", "ncbi_disease", "--limit", "4", "--output-dir", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "trained on base model 'builtin:minilm-l6' (bert, hidden 384" in err and f"'{MICRO}' (llama" in err

