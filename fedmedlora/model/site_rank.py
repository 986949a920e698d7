"""A site's own LoRA rank on the resident model: one frozen base, one named PEFT adapter per rank.

Heterogeneous ranks (FlexLoRA) give each site its rank; a simulation worker plays several sites, so the resident model
(loaded once, keyed by lora.r) carries an extra adapter for each other rank it meets (`PeftModel.add_adapter`, about
0.1 s for MiniLM; the base is never reloaded) and switches to it for the call (`set_adapter`, which also makes it the
only trainable one). The server's rank stays the adapter named "default", made active again on the way out, so the
server's evaluation in the same process always sees it. A rank-r adapter's lora_alpha is lora.alpha * r / lora.r:
every rank then scales a direction by lora.alpha / lora.r, as the server's adapter does (aggregation/hetero_rank.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from ..settings import Settings
from .adapter import lora_config

DEFAULT = "default"


def adapter_name(settings: Settings, rank: int) -> str:
    return DEFAULT if rank == settings.lora.r else f"rank{rank}"


def rank_config(settings: Settings, head: str, rank: int) -> Any:
    """The LoraConfig of a rank-`rank` site adapter (same targets and dropout, alpha scaled with the rank)."""
    lora = dataclasses.replace(settings.lora, r=rank, alpha=settings.lora.alpha * rank / settings.lora.r)
    return lora_config(dataclasses.replace(settings, lora=lora), head)


@contextlib.contextmanager
def at_rank(model: Any, settings: Settings, head: str, rank: int) -> Iterator[str]:
    """Make the rank-`rank` adapter the active (and only trainable) one for the duration; yields its name."""
    name = adapter_name(settings, rank)
    if name == DEFAULT:
        yield name
        return
    if name not in model.peft_config:
        model.add_adapter(name, rank_config(settings, head, rank))
    model.set_adapter(name)
    try:
        yield name
    finally:
        model.set_adapter(DEFAULT)
