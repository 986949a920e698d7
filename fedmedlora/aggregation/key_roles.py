"""Which adapter tensors travel, and what a site does with the ones that do not.

A strategy declares a scheme; every adapter key then has one role:
- `shared`: trained by the sites, sent both ways, combined by the server (every key, for FedAvg and its kin);
- `frozen`: fixed at the initial adapter, which server and sites both draw from `run.seed`; never trained, never
  sent (FFA-LoRA's A);
- `personal`: trained by a site and kept by it (in the ClientApp's `context.state`); never sent (FedSA-LoRA's B).

The server screens replies against the shared keys only, so a site that sends a frozen or personal tensor is
refused. Keys are PEFT checkpoint keys (`...query.lora_A.weight`); a task head (`classifier.weight`) is shared.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

SHARED, FROZEN, PERSONAL = "shared", "frozen", "personal"

_FACTOR = re.compile(r"\.lora_(?:embedding_)?(?P<factor>[AB])(?:\.|$)")

# scheme -> role of (LoRA A, LoRA B); other tensors are shared in every scheme
SCHEMES: dict[str, tuple[str, str]] = {
    "all": (SHARED, SHARED),
    "b-only": (FROZEN, SHARED),  # FFA-LoRA
    "a-only": (SHARED, PERSONAL),  # FedSA-LoRA
}


def lora_factor(key: str) -> str | None:
    """'A' or 'B' for a LoRA factor's key (or parameter name), None for anything else."""
    match = _FACTOR.search(key)
    return match["factor"] if match else None


def key_role(key: str, scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown key scheme {scheme!r}; known: {sorted(SCHEMES)}")
    factor = lora_factor(key)
    if factor is None:
        return SHARED
    return SCHEMES[scheme][0 if factor == "A" else 1]


def keys_with_role(keys: Iterable[str], scheme: str, role: str) -> list[str]:
    """The keys (in their order) that have `role` under `scheme`."""
    return [k for k in keys if key_role(k, scheme) == role]
