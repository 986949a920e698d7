"""The LoRA adapter: its config, its tensors as numpy state, its round-0 initialisation and its checkpoints.

Only the adapter travels: the LoRA A/B matrices and, for token classifiers, the new task head (PEFT's
`modules_to_save`). Keys are PEFT's own checkpoint keys (`get_peft_model_state_dict`), so a global adapter saved
with `save_checkpoint` loads with `PeftModel.from_pretrained`. How a state goes on the wire: ../wire.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..settings import Settings

def family_of_head(head: str) -> str:
    """A task's head names the model family: "" is a causal LM's own head, "token"/"sequence" an encoder's."""
    return "encoder" if head else "causal"


def lora_config(settings: Settings, head: str, *, base_model_name_or_path: str | None = None) -> Any:
    """PEFT's adapter config (LoraConfig; for lora.adapter "rxr" see `rxr_config`); the head's kind also decides
    PEFT's wrapper class when a checkpoint is loaded."""
    from peft import LoraConfig, TaskType

    task_type = {"": TaskType.CAUSAL_LM, "token": TaskType.TOKEN_CLS, "sequence": TaskType.SEQ_CLS}[head]
    if settings.adapter_kind == "rxr":
        return rxr_config(settings, task_type, base_model_name_or_path)
    return LoraConfig(
        task_type=task_type,
        r=settings.lora.r,
        lora_alpha=settings.lora.alpha,
        lora_dropout=settings.lora.dropout,
        target_modules=settings.target_modules,
        bias="none",
        base_model_name_or_path=base_model_name_or_path,
    )


def rxr_config(settings: Settings, task_type: Any, base_model_name_or_path: str | None) -> Any:
    """The r x r adapter of Fed-SB / LoRA-SB: delta W = (alpha / r) B (R - I) A with A (r x in) and B (out x r) fixed
    from the truncated SVD of the frozen weight and only R (r x r, starting at I) trained. It is PEFT's PSOFT adapter
    without its orthogonality constraint and magnitude vectors. A and B are recomputed from the base weights where the
    model is loaded, identically on every side, and never travel; "full" SVD is exact, "lowrank" (above 2048 columns)
    is seeded, so deterministic too."""
    from peft import PsoftConfig

    return PsoftConfig(
        task_type=task_type,
        r=settings.lora.r,
        psoft_alpha=settings.lora.alpha,
        psoft_dropout=settings.lora.dropout,
        target_modules=settings.target_modules,
        psoft_orth=False,
        psoft_mag_a=False,
        psoft_mag_b=False,
        psoft_svd="full",
        base_model_name_or_path=base_model_name_or_path,
    )


def missing_target_modules(model: Any, targets: list[str] | str) -> list[str]:
    """Target names that match no module of `model` (PEFT matches on the last name component)."""
    if targets == "all-linear":
        return []
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return [t for t in targets if t not in leaf_names]


def adapter_state(model: Any, adapter_name: str = "default") -> dict[str, np.ndarray]:
    """The adapter's tensors as float32 numpy arrays, under PEFT checkpoint keys."""
    import torch
    from peft import get_peft_model_state_dict

    return {k: v.detach().to("cpu", torch.float32).numpy()
            for k, v in get_peft_model_state_dict(model, adapter_name=adapter_name).items()}


def load_adapter_state(model: Any, state: Mapping[str, np.ndarray], adapter_name: str = "default") -> None:
    """Overwrite the adapter (LoRA + head) of a PeftModel with `state`; every adapter key must be present."""
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    expected = set(get_peft_model_state_dict(model, adapter_name=adapter_name))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"adapter keys do not match the model: missing {missing[:3]}, unexpected {extra[:3]} "
                         f"({len(missing)} missing, {len(extra)} unexpected)")
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}
    result = set_peft_model_state_dict(model, tensors, adapter_name=adapter_name)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"PEFT did not place adapter keys {unexpected[:3]}")


def initial_adapter_state(settings: Settings, head: str, num_labels: int | None, seed: int) -> dict[str, np.ndarray]:
    """The round-0 global adapter, drawn from `seed`, without loading the base weights.

    The base model is built on the meta device (no memory, no download beyond its config); only the adapter
    modules are materialised and initialised as PEFT does (A: Kaiming-uniform, B: zeros; a new head as the model
    initialises it). An 8B base costs the server well under a second here.
    """
    import torch
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer

    base = meta_base_model(settings, head, num_labels)
    if problem := target_modules_problem(settings, base):
        raise ValueError(problem)
    peft_model = get_peft_model(base, lora_config(settings, head))
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for module in peft_model.modules():
            for core in getattr(module, "psoft_R", {}).values():  # the r x r adapter: R starts at I
                core.to_empty(device="cpu")
                core.reset_parameters(init_weights=True)
            if isinstance(module, LoraLayer):
                for adapter_name in module.lora_A:
                    module.lora_A[adapter_name].to_empty(device="cpu")
                    module.lora_B[adapter_name].to_empty(device="cpu")
                    module.reset_lora_parameters(adapter_name, init_lora_weights=True)
        for name, module in peft_model.named_modules():
            if name.endswith("modules_to_save.default"):
                module.to_empty(device="cpu")
                base._init_weights(module)
    finally:
        torch.random.set_rng_state(rng_state)
    return adapter_state(peft_model)


def meta_base_model(settings: Settings, head: str, num_labels: int | None = None) -> Any:
    """The base model with its head, built from its config on the meta device: every module, no weights, no memory."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    from .loading import encoder_auto_class, load_config

    config = load_config(settings.model.name)
    if head:
        config.num_labels = num_labels or 2
    with init_empty_weights():
        auto = encoder_auto_class(head) if head else AutoModelForCausalLM
        return auto.from_config(config)


def target_modules_problem(settings: Settings, model: Any) -> str | None:
    """Why `lora.target-modules` does not fit `model` (names and its linear layers), or None."""
    missing = missing_target_modules(model, settings.target_modules)
    return _missing_targets_message(settings, model, missing) if missing else None


def _missing_targets_message(settings: Settings, model: Any, missing: list[str]) -> str:
    import torch

    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    return (f"key 'lora.target-modules' = {settings['lora.target-modules']!r}: {missing} match no module of "
            f"{settings.model.name}; its linear layers are named {linear} (or use \"all-linear\")")


def checkpoint_info(settings: Settings, family: str, labels: list[str], server_round: int,
                    **extra: Any) -> dict[str, Any]:
    """`fedmedlora.json` of a `peft_<round>/`: what eval needs besides the tensors (task, labels, max length) and
    the base model, by name and by architecture (base_identity.base_record), so eval can refuse a wrong base."""
    from .base_identity import base_record

    return {"round": server_round, "task": settings.data.task, "family": family, "labels": list(labels),
            "max-length": settings.data.max_length, **base_record(settings.model.name), **extra}


def save_checkpoint(
    directory: Path, state: Mapping[str, np.ndarray], config: Any, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) atomically."""
    import torch
    from safetensors.torch import save_file

    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(tmp))
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    if extra:
        (tmp / "fedmedlora.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
    if directory.exists():
        import shutil

        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory
