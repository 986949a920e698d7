"""The adapter: initial state without the base weights, wire round-trip, loading into the model, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmedlora.model.adapter import adapter_state, initial_adapter_state, load_adapter_state, lora_config, save_checkpoint
from fedmedlora.wire import from_array_record, to_array_record
from fedmedlora.job import get_job
from fedmedlora.settings import parse_run_config

from fedmedlora.model.shapes import llama3_8b_config
from helpers import TINY_INSTRUCT, TINY_NER


@pytest.fixture(scope="module")
def ner_job():
    return get_job(parse_run_config(TINY_NER))


def test_initial_state_matches_the_peft_model_and_starts_with_zero_b(ner_job):
    state = initial_adapter_state(ner_job.settings, "token", len(ner_job.labels), seed=7)
    model_state = adapter_state(ner_job.resident().model)
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in model_state.items()}
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    lora_a = [v for k, v in state.items() if "lora_A" in k]
    assert len(lora_b) == 12 and all(not b.any() for b in lora_b)  # 6 layers x (query, value)
    assert all(a.std() > 0 for a in lora_a)
    assert state["base_model.model.classifier.weight"].shape == (5, 384)  # O + B/I x (Chemical, Disease)
    again = initial_adapter_state(ner_job.settings, "token", len(ner_job.labels), seed=7)
    assert all(np.array_equal(state[k], again[k]) for k in state)


def test_initial_state_of_an_8b_llama_needs_no_weights(monkeypatch):
    # Llama-3-8B's shape from its config alone (meta device): r=32 on q_proj/v_proj is the seed's 13.6 M parameters
    import fedmedlora.model.loading

    config = llama3_8b_config()
    monkeypatch.setattr(fedmedlora.model.loading, "load_config", lambda name: config)
    settings = parse_run_config({"model.name": "meta-llama/Meta-Llama-3-8B", "lora.r": 32, "lora.alpha": 64.0,
                                 "lora.target-modules": "q_proj,v_proj"})
    state = initial_adapter_state(settings, "", None, seed=0)
    assert sum(v.size for v in state.values()) == 13_631_488 and len(state) == 128


def test_missing_lora_targets_are_named_with_the_models_layers():
    settings = parse_run_config({"lora.target-modules": "q_proj,v_proj"})
    with pytest.raises(ValueError, match=r"key 'lora.target-modules' = 'q_proj,v_proj': \['q_proj', 'v_proj'\] "
                                         r"match no module of builtin:minilm-l6; its linear layers are named .*query"):
        initial_adapter_state(settings, "token", 5, seed=0)


def test_wire_round_trip_keeps_keys_and_float16_precision(ner_job):
    state = adapter_state(ner_job.resident().model)
    record = to_array_record(state, "float16")
    assert {a.dtype for a in record.values()} == {"float16"}
    back = from_array_record(record)
    assert set(back) == set(state) and all(back[k].dtype == np.float32 for k in back)
    for k in state:
        assert np.allclose(back[k], state[k], rtol=1e-3, atol=1e-4)
    exact = from_array_record(to_array_record(state, "float32"))
    assert all(np.array_equal(exact[k], state[k]) for k in state)


def test_loading_an_adapter_changes_the_model_and_refuses_foreign_keys(ner_job):
    model = ner_job.resident().model
    state = adapter_state(model)
    changed = {k: v + 0.01 for k, v in state.items()}
    load_adapter_state(model, changed)
    assert all(np.allclose(adapter_state(model)[k], changed[k]) for k in state)
    load_adapter_state(model, state)
    with pytest.raises(ValueError, match="adapter keys do not match"):
        load_adapter_state(model, {**state, "base_model.model.extra.weight": np.zeros(3, np.float32)})


def test_checkpoint_loads_with_peft_from_pretrained(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from fedmedlora.model.loading import resolve_model_source

    job = get_job(parse_run_config(TINY_INSTRUCT))
    model = job.resident().model
    state = {k: v + np.random.default_rng(0).normal(0, 0.02, v.shape).astype(np.float32)
             for k, v in adapter_state(model).items()}
    load_adapter_state(model, state)
    path = save_checkpoint(tmp_path / "peft_3", state, lora_config(job.settings, "",
                           base_model_name_or_path=job.settings.model.name), extra={"round": 3})
    assert (path / "adapter_config.json").exists() and (path / "adapter_model.safetensors").exists()
    base = AutoModelForCausalLM.from_pretrained(resolve_model_source(job.settings.model.name))
    loaded = PeftModel.from_pretrained(base, str(path))
    ids = torch.tensor([[1, 50, 60, 70, 80]])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)


@pytest.mark.parametrize("preset, params, tensors", [
    ("flowertune-medical.toml", 13_631_488, 128),  # r=32 on q_proj, v_proj: the seed's 13.6 M
    ("fed-medlora-ie.toml", 41_943_040, 448),  # r=16 on all seven projections
])
def test_gpu_presets_build_their_adapter_on_the_8b_shape(monkeypatch, preset, params, tensors):
    """The GPU presets' LoRA targets exist in a Llama-3-8B-shaped model (from its config, on the meta device)."""
    from pathlib import Path

    import fedmedlora.model.loading
    from fedmedlora.settings import load_toml_overrides

    config = llama3_8b_config()
    monkeypatch.setattr(fedmedlora.model.loading, "load_config", lambda name: config)
    conf = Path(__file__).resolve().parents[1] / "conf" / preset
    settings = parse_run_config(load_toml_overrides(str(conf)))
    state = initial_adapter_state(settings, "", None, seed=0)
    assert sum(v.size for v in state.values()) == params and len(state) == tensors
