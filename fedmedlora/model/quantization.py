"""bitsandbytes quantization: where it can run, and keeping 4-bit layers trainable on the CPU.

With CUDA, 4-bit NF4 and 8-bit load through bitsandbytes as usual. Without, bitsandbytes 0.50's CPU backend runs
4-bit NF4 (QLoRA) for causal LMs; 8-bit, and encoders (whose new classification head would be quantized too), still
need CUDA. `quantization_problem` says why a setting cannot run where it is asked for, naming what to install.
"""

from __future__ import annotations

import functools
from typing import Any

BITSANDBYTES_PIP = 'pip install "bitsandbytes>=0.50,<0.51"'


@functools.lru_cache(maxsize=1)
def _bitsandbytes_runs_4bit_on_cpu() -> str | None:
    """None when bitsandbytes is importable and quantizes to NF4 on the CPU; else what is wrong (checked once)."""
    try:
        import bitsandbytes
        import torch
    except ImportError:
        return f"bitsandbytes is not installed ({BITSANDBYTES_PIP})"
    try:
        packed, state = bitsandbytes.functional.quantize_4bit(torch.ones(64, 64), quant_type="nf4")
        restored = bitsandbytes.functional.dequantize_4bit(packed, state)
    except Exception as err:  # an old release or a build without its CPU library
        return (f"bitsandbytes {getattr(bitsandbytes, '__version__', '?')} cannot quantize on the CPU "
                f"({type(err).__name__}: {err}); 4-bit on the CPU needs bitsandbytes 0.50 ({BITSANDBYTES_PIP})")
    if not torch.allclose(restored, torch.ones(64, 64)):
        return "bitsandbytes' CPU backend returned wrong values in a 4-bit round trip"
    return None


def quantization_problem(bits: int, where: str, family: str | None = None) -> str | None:
    """Why `bits`-bit loading (bitsandbytes) cannot run in `where`, or None when it can.

    With CUDA: 4 and 8 bits (bitsandbytes must be installed). Without: 4-bit NF4 runs on bitsandbytes' CPU backend
    (0.50+) for causal LMs, the models QLoRA is for; 8-bit, and encoders (whose new classification head would be
    quantized too), still need CUDA. `family` None (not known yet) accepts both families."""
    import torch

    if not bits:
        return None
    if torch.cuda.is_available():
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            return (f"model.quantization = {bits} needs bitsandbytes, which {where} does not have: "
                    f"{BITSANDBYTES_PIP} (the gpu extra)")
        return None
    if bits == 4 and family in (None, "causal"):
        problem = _bitsandbytes_runs_4bit_on_cpu()
        if problem is None:
            return None
        return f"model.quantization = 4 on the CPU of {where}: {problem}. Or use model.quantization = 0"
    if bits == 4:
        return (f"model.quantization = 4 on the CPU ({where} sees no CUDA GPU) is supported for causal LMs only; "
                f"this model is an {family}. Use model.quantization = 0 on CPU, or a CUDA GPU")
    return (f"model.quantization = {bits} needs a CUDA GPU (bitsandbytes) but {where} sees none. Use "
            "model.quantization = 0, or 4 (NF4 runs on the CPU for causal LMs); in a simulation, give ClientApps a "
            "GPU with --federation-config \"client-resources-num-gpus=1\".")


def require_quantization_support(bits: int, where: str, family: str | None = None) -> None:
    problem = quantization_problem(bits, where, family)
    if problem:
        raise RuntimeError(problem)


def keep_4bit_layers_trainable_on_cpu(model: Any) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel; returns the layers changed.

    bitsandbytes 0.50 repacks a Linear4bit's weight, in place and for good, the first time the layer runs in eval mode
    without gradients on a CPU with AVX512-BF16. That kernel has no backward: in later training no gradient reaches
    the LoRA factors below the first such layer, silently (the loss does not move). A resident model is evaluated
    (server-side scoring) and trained in turn, so its 4-bit layers keep the layout that trains."""
    import bitsandbytes

    changed = 0
    for module in model.modules():
        if isinstance(module, bitsandbytes.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed



def quantized_device_map() -> dict[str, Any]:
    """bitsandbytes layers live where they compute: the current GPU, else the CPU."""
    import torch

    return {"": torch.cuda.current_device()} if torch.cuda.is_available() else {"": "cpu"}
