"""Loading what `eval.py` scores: a causal base model (optionally 4/8-bit quantized, as FlowerTune's leaderboard asks)
and, optionally, a PEFT adapter on top. All checks that need no weights run first (`check_model_request`), so a
wrong flag fails in a second rather than after a multi-gigabyte download.

Quantization follows FlowerTune's eval script, not our training preset: 4-bit is bitsandbytes' default
`BitsAndBytesConfig(load_in_4bit=True)` (FP4, no double quantization) with float32 compute; 8-bit uses float16.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..model.loading import load_config, load_tokenizer, model_family, resolve_model_source, torch_dtype
from .errors import EvalInputError

FLOWERTUNE_DTYPE = {4: "float32", 8: "float16"}


@dataclass(frozen=True)
class ModelRequest:
    base: str  # hub id, local folder or builtin:<name>
    peft_path: str | None
    quantization: int  # 0, 4 or 8
    device: str  # "cpu" or "cuda", already resolved
    dtype: str  # float32 / bfloat16 / float16, already resolved


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise EvalInputError("--device cuda: this machine has no CUDA GPU that torch can see; use --device cpu")
    return requested


def resolve_dtype(requested: str, quantization: int, device: str) -> str:
    if requested != "auto":
        return requested
    if quantization:
        return FLOWERTUNE_DTYPE[quantization]
    return "bfloat16" if device == "cuda" else "float32"


def check_model_request(request: ModelRequest, family: str | None = "causal") -> None:
    """Everything about the model flags that can be checked without loading weights.

    `family` is the model family the task needs ("causal" for QA); None accepts either (NER/RE scoring)."""
    if request.quantization not in (0, 4, 8):
        raise EvalInputError(f"--quantization must be 0, 4 or 8, got {request.quantization}")
    if request.quantization and request.device != "cuda":
        raise EvalInputError(
            f"--quantization {request.quantization} needs a CUDA GPU (bitsandbytes), but this run is on "
            f"{request.device}. Use --quantization 0 to score the unquantized model on the CPU "
            "(numbers then differ slightly from 4-bit leaderboard runs)."
        )
    if request.peft_path is not None:
        _check_peft_path(request.peft_path)
    try:
        config = load_config(request.base)
    except ValueError as err:
        raise EvalInputError(f"--base-model-name-path: {err}") from None
    if family is not None and model_family(config) != family:
        raise EvalInputError(
            f"--base-model-name-path {request.base!r} is a {config.model_type} encoder, not a causal LM: QA scoring "
            "generates answers (use --task ner or --task re for token classifiers)"
        )
    if request.peft_path is not None and os.path.isdir(os.path.expanduser(request.peft_path)):
        from ..model.base_identity import adapter_base_problem

        problem = adapter_base_problem(os.path.expanduser(request.peft_path), request.base, config)
        if problem:
            raise EvalInputError(f"--peft-path: {problem}")


def _check_peft_path(peft_path: str) -> None:
    expanded = os.path.expanduser(peft_path)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "adapter_config.json")):
            raise EvalInputError(f"--peft-path {peft_path}: the folder has no adapter_config.json, so it is not a "
                                 "PEFT adapter saved with save_pretrained")
    elif peft_path.startswith((".", "/", "~")) or os.path.exists(expanded):
        raise EvalInputError(f"--peft-path {peft_path}: no such folder ({os.path.abspath(expanded)})")
    # Anything else is taken as a Hugging Face hub id and left to PEFT to fetch.


def load_model_for_eval(request: ModelRequest, family: str = "causal",
                        labels: list[str] | None = None, head: str = "token") -> tuple[Any, Any]:
    """(model in eval mode on its device, tokenizer). The tokenizer is the base model's, as FlowerTune loads it.

    Encoders load through the training loader with the checkpoint's label set and the task's head (`token` for NER,
    `sequence` for relation classification), so the head the adapter carries fits."""
    import torch
    from transformers import AutoModelForCausalLM

    check_model_request(request, family=None if family == "encoder" else "causal")
    tokenizer = load_tokenizer(request.base, family)  # before the weights: a broken tokenizer fails fast
    if family == "encoder":
        return _load_encoder(request, tokenizer, labels or [], head), tokenizer
    torch.manual_seed(2024)  # FlowerTune fixes this seed; greedy decoding does not use it, but custom code might
    kwargs: dict[str, Any] = {"dtype": torch_dtype(request.dtype)}
    if request.quantization:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (BitsAndBytesConfig(load_in_4bit=True) if request.quantization == 4
                                         else BitsAndBytesConfig(load_in_8bit=True))
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = AutoModelForCausalLM.from_pretrained(resolve_model_source(request.base), **kwargs)
    if not request.quantization:
        model.to(request.device)
    if request.peft_path is not None:
        model = _apply_adapter(model, request)
    model.eval()
    return model, tokenizer


def _apply_adapter(model: Any, request: ModelRequest) -> Any:
    """The PEFT adapter on `model`; an adapter of another shape (a base check had nothing recorded to compare) is
    reported as a user error naming both, not as PEFT's tensor-size traceback."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, os.path.expanduser(request.peft_path), is_trainable=False)
    except RuntimeError as err:
        if "size mismatch" not in str(err):
            raise
        first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err)[:300])
        raise EvalInputError(f"--peft-path {request.peft_path} does not fit --base-model-name-path {request.base!r}: "
                             f"its tensors have other shapes ({first}). Score it with the base it was trained on"
                             ) from None


def _load_encoder(request: ModelRequest, tokenizer: Any, labels: list[str], head: str) -> Any:
    from ..model.loading import load_base_model

    model = load_base_model(request.base, "encoder", dtype=request.dtype, quantization=request.quantization,
                            num_labels=len(labels), id2label=dict(enumerate(labels)), head=head)
    model.to(request.device)
    if request.peft_path is not None:
        model = _apply_adapter(model, request)
    model.eval()
    return model
