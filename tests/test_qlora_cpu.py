"""QLoRA on the CPU: model.quantization = 4 loads a causal LM in 4-bit NF4 with bitsandbytes' CPU backend and trains
LoRA on it through the project's own training path; where that cannot run, the error says what to install."""

from __future__ import annotations

import sys

import pytest
import torch

from fedmedlora.model import quantization
from fedmedlora.data.prompts import instruction_prompt
from fedmedlora.model.quantization import quantization_problem

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="these are the CPU rules")

SHORT_ANSWERS = [("Is aspirin an NSAID?", "Yes."), ("Is insulin made in the liver?", "No, in the pancreas."),
                 ("What does an oncologist treat?", "Cancer."), ("Which organ filters the blood?", "The kidney.")]


@pytest.fixture()
def fresh_check():
    quantization._bitsandbytes_runs_4bit_on_cpu.cache_clear()
    yield
    quantization._bitsandbytes_runs_4bit_on_cpu.cache_clear()


@pytest.mark.slow
@no_cuda
def test_lora_trains_on_smollm2_loaded_in_4bit_on_the_cpu(smollm2_folder):
    import bitsandbytes as bnb

    from fedmedlora.model.adapter import adapter_state
    from fedmedlora.job import get_job
    from fedmedlora.settings import parse_run_config
    from fedmedlora.model.training import train_locally

    settings = parse_run_config({
        "data.task": "instruct", "data.datasets": "medquad", "data.num-sites": 2, "data.max-length": 64,
        "data.max-train-examples": 4, "data.max-eval-examples": 2, "model.name": "builtin:smollm2-135m",
        "model.quantization": 4, "lora.target-modules": "q_proj,v_proj", "train.local-steps": 3,
        "train.batch-size": 4, "train.learning-rate-max": 3e-3, "train.learning-rate-min": 3e-3,
    })
    job = get_job(settings)
    resident = job.resident()
    layer = resident.model.base_model.model.model.layers[0]
    assert isinstance(layer.self_attn.q_proj.base_layer, bnb.nn.Linear4bit)  # LoRA wraps a 4-bit layer
    assert isinstance(layer.mlp.up_proj, bnb.nn.Linear4bit)  # frozen, not adapted, still 4-bit
    assert layer.mlp.up_proj.weight.quant_state.quant_type == "nf4"
    assert next(resident.model.parameters()).device.type == "cpu"

    rows = [{"prompt": instruction_prompt(q), "completion": a} for q, a in SHORT_ANSWERS]
    dataset = job.task.tokenize(rows, resident.tokenizer)
    # scoring first, as the ServerApp does at round 0: an inference pass must not leave the 4-bit layers in
    # bitsandbytes' CPU inference layout, whose kernel has no backward (the LoRA factors would get no gradient)
    before = job.task.score(job.task.predict(resident, rows, dataset, 4))["loss"]
    assert not getattr(layer.mlp.up_proj.weight.quant_state, "packing_format_for_cpu", False)
    metrics = train_locally(job.settings, job.task, resident, dataset, learning_rate=3e-3, seed=1)
    after = job.task.score(job.task.predict(resident, rows, dataset, 4))["loss"]
    assert metrics["train-steps"] == 3
    assert after < before - 0.5, (before, after)
    state = adapter_state(resident.model)  # what a client sends: float32 LoRA factors
    assert len(state) == 120 and state[next(k for k in state if "q_proj.lora_A" in k)].shape == (8, 576)
    assert any(abs(v).max() > 0 for k, v in state.items() if "lora_B" in k)


@no_cuda
def test_without_bitsandbytes_4bit_says_what_to_install(monkeypatch, fresh_check):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    problem = quantization_problem(4, "this machine", "causal")
    assert 'bitsandbytes is not installed (pip install "bitsandbytes>=0.50,<0.51")' in problem


@no_cuda
def test_a_bitsandbytes_without_a_cpu_backend_is_named(monkeypatch, fresh_check):
    import bitsandbytes

    def no_backend(*args, **kwargs):
        raise NotImplementedError("no kernel for cpu")

    monkeypatch.setattr(bitsandbytes.functional, "quantize_4bit", no_backend)
    problem = quantization_problem(4, "this ClientApp", "causal")
    assert "cannot quantize on the CPU (NotImplementedError: no kernel for cpu)" in problem
    assert "bitsandbytes>=0.50,<0.51" in problem


@no_cuda
def test_cpu_rules_8bit_and_encoders_still_need_cuda(fresh_check):
    assert quantization_problem(4, "this machine", "causal") is None
    assert quantization_problem(4, "this machine") is None  # family not known yet: load_base_model checks again
    assert "needs a CUDA GPU" in quantization_problem(8, "this machine", "causal")
    assert "supported for causal LMs only" in quantization_problem(4, "this machine", "encoder")
    assert quantization_problem(0, "this machine", "encoder") is None


@no_cuda
def test_a_federation_without_bitsandbytes_stops_before_training(tmp_path, monkeypatch, fresh_check):
    from fedmedlora.launch.grid import run_in_process

    from helpers import TINY_INSTRUCT

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(RuntimeError, match="model.quantization = 4 on the CPU of the ServerApp: bitsandbytes is "
                                           "not installed"):
        run_in_process({**TINY_INSTRUCT, "model.quantization": 4, "run.results-dir": str(tmp_path)})
    assert not list(tmp_path.iterdir())
